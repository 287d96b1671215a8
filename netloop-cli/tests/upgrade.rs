//! Socket activation and live upgrade (SIGUSR2) of the `netloop` servers,
//! run as a user runs them: child processes on loopback, started the way
//! systemd starts them, upgraded under continuous load.
//!
//! The test process makes itself a child subreaper, so the old processes
//! of an upgrade (each the parent of the next) come back to it when their
//! parents exit, and their exit statuses can be checked.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsFd;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::thread;
use std::time::{Duration, Instant};

use netloop::activation;
use rustix::process::{Pid, Signal, WaitOptions};

/// How long any one wait in these tests may take.
const LIMIT: Duration = Duration::from_secs(20);

fn exe() -> &'static str {
    env!("CARGO_BIN_EXE_netloop")
}

fn become_subreaper() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        rustix::process::set_child_subreaper(Some(rustix::process::getpid()))
            .expect("PR_SET_CHILD_SUBREAPER");
    });
}

fn pid(raw: u32) -> Pid {
    Pid::from_raw(raw as i32).expect("a pid")
}

fn signal(raw: u32, signal: Signal) {
    rustix::process::kill_process(pid(raw), signal).expect("kill");
}

/// Waits for a process that is (or, once its parent exits, becomes) our
/// child to exit, and reaps it.
fn wait_exit(raw: u32) -> ExitStatus {
    use std::os::unix::process::ExitStatusExt;
    let deadline = Instant::now() + LIMIT;
    loop {
        match rustix::process::waitpid(Some(pid(raw)), WaitOptions::NOHANG) {
            Ok(Some((_, status))) => return ExitStatus::from_raw(status.as_raw()),
            // Still running, or still its old parent's child.
            Ok(None) | Err(rustix::io::Errno::CHILD) => {}
            Err(e) => panic!("waitpid {raw}: {e}"),
        }
        assert!(Instant::now() < deadline, "process {raw} did not exit");
        thread::sleep(Duration::from_millis(10));
    }
}

/// Lines a process family wrote, shared with the threads reading them.
type Lines = Arc<Mutex<Vec<String>>>;

fn collect(stream: impl Read + Send + 'static, lines: &Lines) {
    let lines = Arc::clone(lines);
    thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { return };
            lines.lock().unwrap().push(line);
        }
    });
}

/// Waits for a line `matches` accepts among `lines`, from index `from`.
fn wait_line(lines: &Lines, from: usize, what: &str, matches: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + LIMIT;
    loop {
        if let Some(line) = lines.lock().unwrap().iter().skip(from).find(|l| matches(l)) {
            return line.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no {what} in the log:\n{}",
            lines.lock().unwrap().join("\n")
        );
        thread::sleep(Duration::from_millis(5));
    }
}

/// The value of `key=` in a log line.
fn field(line: &str, key: &str) -> Option<u32> {
    line.split_whitespace()
        .find_map(|word| word.strip_prefix(&format!("{key}=")))
        .and_then(|value| value.parse().ok())
}

/// A server and the processes that replaced it.
struct Family {
    first: Child,
    /// The process serving now.
    pid: u32,
    /// Processes that handed over, oldest first (the first is `first`).
    old: Vec<u32>,
    addrs: Vec<SocketAddr>,
    stderr: Lines,
}

/// A failing test must not leave its servers running: kill the whole
/// family when a test panics (`stop_all` waits for them otherwise).
impl Drop for Family {
    fn drop(&mut self) {
        if thread::panicking() {
            for &raw in self.old.iter().chain([&self.pid]) {
                let _ = rustix::process::kill_process(pid(raw), Signal::KILL);
            }
            let _ = self.first.kill();
        }
    }
}

impl Family {
    fn start(program: &Path, args: &[&str]) -> Self {
        Self::start_with(Command::new(program).args(args), 1)
    }

    /// Starts `command` and reads the `listening on` lines it prints.
    fn start_with(command: &mut Command, listeners: usize) -> Self {
        become_subreaper();
        let mut first = command
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn netloop");
        let (stdout, stderr) = (Lines::default(), Lines::default());
        collect(first.stdout.take().expect("stdout"), &stdout);
        collect(first.stderr.take().expect("stderr"), &stderr);
        let deadline = Instant::now() + LIMIT;
        while stdout.lock().unwrap().len() < listeners {
            if let Some(status) = first.try_wait().expect("try_wait") {
                panic!(
                    "netloop exited ({status}):\n{}",
                    stderr.lock().unwrap().join("\n")
                );
            }
            assert!(
                Instant::now() < deadline,
                "netloop did not print its addresses"
            );
            thread::sleep(Duration::from_millis(5));
        }
        let addrs = stdout.lock().unwrap()[..listeners]
            .iter()
            .map(|line| {
                line.strip_prefix("listening on ")
                    .unwrap_or_else(|| panic!("unexpected line {line:?}"))
                    .parse()
                    .expect("address")
            })
            .collect();
        Self {
            pid: first.id(),
            first,
            old: Vec::new(),
            addrs,
            stderr,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    fn log_len(&self) -> usize {
        self.stderr.lock().unwrap().len()
    }

    fn wait_log(&self, from: usize, what: &str) -> String {
        let pid = self.pid;
        wait_line(&self.stderr, from, what, |l| {
            l.contains(what) && field(l, "pid") == Some(pid)
        })
    }

    /// SIGUSR2, and waits for the new process to be ready; returns its pid.
    fn upgrade(&mut self) -> u32 {
        let from = self.log_len();
        signal(self.pid, Signal::USR2);
        let ready = self.wait_log(from, "the new process is ready");
        let new_pid = field(&ready, "new_pid").expect("new_pid");
        self.old.push(self.pid);
        self.pid = new_pid;
        new_pid
    }

    /// Every old process exits 0 (once its connections have ended), then
    /// the serving one on SIGTERM.
    fn stop_all(mut self) {
        for (index, &old) in self.old.iter().enumerate() {
            let status = if index == 0 {
                wait_child(&mut self.first)
            } else {
                wait_exit(old)
            };
            assert!(
                status.success(),
                "old process {old}: {status}\n{}",
                self.log()
            );
        }
        signal(self.pid, Signal::TERM);
        let status = if self.old.is_empty() {
            wait_child(&mut self.first)
        } else {
            wait_exit(self.pid)
        };
        assert!(status.success(), "last process {}: {status}", self.pid);
    }

    fn log(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }
}

fn wait_child(child: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + LIMIT;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        assert!(Instant::now() < deadline, "netloop did not exit");
        thread::sleep(Duration::from_millis(10));
    }
}

// ------------------------------------------------------------- clients

/// A protocol the short-connection client speaks: one request per
/// connection, then close.
#[derive(Clone, Copy, Debug)]
enum Proto {
    Echo,
    Http,
    Resp,
}

impl Proto {
    /// One connection: connect, ask, check the answer, close.
    fn exchange(self, addr: SocketAddr, sequence: u64) -> Result<(), String> {
        let mut stream = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(|e| e.to_string())?;
        let (request, expected): (Vec<u8>, Vec<u8>) = match self {
            Proto::Echo => {
                let message = format!("message {sequence} {}\n", "x".repeat(40)).into_bytes();
                (message.clone(), message)
            }
            Proto::Http => (
                b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".to_vec(),
                b"Hello, World!".to_vec(),
            ),
            Proto::Resp => (b"*1\r\n$4\r\nPING\r\n".to_vec(), b"+PONG\r\n".to_vec()),
        };
        stream
            .write_all(&request)
            .map_err(|e| format!("write: {e}"))?;
        let mut got = vec![0u8; expected.len()];
        match self {
            Proto::Http => {
                let mut all = Vec::new();
                stream
                    .read_to_end(&mut all)
                    .map_err(|e| format!("read: {e}"))?;
                if !all.starts_with(b"HTTP/1.1 200") || !all.ends_with(&expected) {
                    return Err(format!("response {:?}", String::from_utf8_lossy(&all)));
                }
                return Ok(());
            }
            _ => stream
                .read_exact(&mut got)
                .map_err(|e| format!("read: {e}"))?,
        }
        if got != expected {
            return Err(format!("wrong answer {:?}", String::from_utf8_lossy(&got)));
        }
        Ok(())
    }
}

/// Short connections, one after another, until stopped: the clients that
/// arrive while the processes change.
struct Churn {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failures: Arc<Mutex<Vec<String>>>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Churn {
    fn start(addr: SocketAddr, proto: Proto, threads: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..threads)
            .map(|t| {
                let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
                thread::spawn(move || {
                    let mut sequence = t as u64 * 1_000_000;
                    while !stop.load(Ordering::Relaxed) {
                        sequence += 1;
                        match proto.exchange(addr, sequence) {
                            Ok(()) => ok.fetch_add(1, Ordering::Relaxed),
                            Err(e) => {
                                failures.lock().unwrap().push(e);
                                0
                            }
                        };
                    }
                })
            })
            .collect();
        Self {
            stop,
            ok,
            failures,
            threads,
        }
    }

    /// Stops; returns the successful exchanges, asserting there was no failure.
    fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads {
            thread.join().expect("churn thread");
        }
        let failures = self.failures.lock().unwrap();
        assert!(
            failures.is_empty(),
            "{} short connection(s) failed: {:?}",
            failures.len(),
            &failures[..failures.len().min(5)]
        );
        self.ok.load(Ordering::Relaxed)
    }
}

/// `netloop load WORKLOAD` for `secs` seconds with connections it keeps.
fn start_load(workload: &str, addr: SocketAddr, secs: f64) -> Child {
    Command::new(exe())
        .args(["load", workload, "--target", &addr.to_string()])
        .args(["--conns", "16", "--depth", "2", "--json"])
        .args(["--duration", &secs.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn netloop load")
}

/// The load run's JSON report, asserting it saw no error.
fn load_report(load: Child) -> String {
    let output = load.wait_with_output().expect("load output");
    let report = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success() && report.contains("\"errors\":0,"),
        "load errors: {report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    report
}

fn messages(report: &str) -> u64 {
    report
        .split("\"messages\":")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .expect("messages in the report")
}

/// `upgrades` upgrades, `gap` apart, while `netloop load` keeps its
/// connections on the first process and short connections come and go.
fn upgrades_under_load(server: &[&str], workload: &str, proto: Proto, upgrades: usize) {
    let mut args = server.to_vec();
    args.extend(["--addr", "127.0.0.1:0", "--stop-timeout", "30"]);
    let mut family = Family::start(Path::new(exe()), &args);
    let gap = Duration::from_millis(250);
    let secs = 1.0 + (gap.as_secs_f64() + 0.1) * upgrades as f64;
    let load = start_load(workload, family.addr(), secs);
    let churn = Churn::start(family.addr(), proto, 2);
    thread::sleep(Duration::from_millis(300));
    let mut pids = vec![family.pid];
    for _ in 0..upgrades {
        pids.push(family.upgrade());
        thread::sleep(gap);
    }
    let report = load_report(load);
    let short = churn.finish();
    assert!(messages(&report) > 0 && short > 0, "{report}; {short}");
    pids.dedup();
    assert_eq!(
        pids.len(),
        upgrades + 1,
        "every upgrade started a new process"
    );
    let log = family.log();
    assert!(!log.contains("upgrade failed"), "an upgrade failed:\n{log}");
    family.stop_all();
}

#[test]
fn echo_ten_upgrades_under_load_lose_nothing() {
    upgrades_under_load(&["echo", "--threads", "2"], "echo", Proto::Echo, 10);
}

#[test]
fn http_ten_upgrades_under_load_lose_nothing() {
    upgrades_under_load(&["http", "--threads", "2"], "http", Proto::Http, 10);
}

#[test]
fn kv_ten_upgrades_under_load_lose_nothing() {
    upgrades_under_load(&["kv", "--threads", "2"], "resp", Proto::Resp, 10);
}

#[test]
fn every_mode_goes_through_an_upgrade() {
    for mode in [
        &["--threads", "2"][..],
        &["--threads", "2", "--exclusive"],
        &["--threads", "2", "--mode", "acceptor"],
        &["--threads", "2", "--mode", "oneshot"],
    ] {
        let mut server = vec!["echo"];
        server.extend_from_slice(mode);
        upgrades_under_load(&server, "echo", Proto::Echo, 1);
    }
}

#[test]
fn proxy_goes_through_an_upgrade() {
    let upstream = Family::start(Path::new(exe()), &["echo", "--addr", "127.0.0.1:0"]);
    let target = upstream.addr().to_string();
    upgrades_under_load(
        &["proxy", "--upstream", &target, "--threads", "2"],
        "echo",
        Proto::Echo,
        2,
    );
    upstream.stop_all();
}

// ------------------------------------------------------- failed upgrades

/// A copy of the binary in a directory of its own, so that the test can
/// replace "the new version" the way a package manager does (rename).
struct Installed {
    dir: PathBuf,
    path: PathBuf,
}

impl Installed {
    fn new(name: &str) -> Self {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("upgrade-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir");
        let path = dir.join("netloop");
        std::fs::copy(exe(), &path).expect("copy netloop");
        Self { dir, path }
    }

    /// Replaces the installed file by a shell script.
    fn replace_with_script(&self, script: &str) {
        use std::os::unix::fs::PermissionsExt;
        let staged = self.dir.join("staged");
        std::fs::write(&staged, script).expect("write script");
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::fs::rename(&staged, &self.path).expect("rename");
    }

    /// Installs the real binary again.
    fn restore(&self) {
        let staged = self.dir.join("staged");
        std::fs::copy(exe(), &staged).expect("copy netloop");
        std::fs::rename(&staged, &self.path).expect("rename");
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Children of `parent` that still exist (zombies included).
fn children_of(parent: u32) -> Vec<u32> {
    let mut children = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: comm may hold spaces, so split after ')'.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let ppid = rest.split_whitespace().nth(1).and_then(|p| p.parse().ok());
        if ppid == Some(parent) {
            children.push(entry.file_name().to_string_lossy().parse().unwrap_or(0));
        }
    }
    children
}

fn still_serves(family: &Family, old_client: &mut TcpStream) {
    Proto::Echo
        .exchange(family.addr(), 1)
        .expect("a new connection is served");
    old_client.write_all(b"still\n").expect("write");
    let mut got = [0u8; 6];
    old_client.read_exact(&mut got).expect("read");
    assert_eq!(&got, b"still\n");
}

#[test]
fn failed_upgrades_leave_the_old_process_serving() {
    let installed = Installed::new("failed");
    let mut family = Family::start(
        &installed.path,
        &["echo", "--addr", "127.0.0.1:0", "--upgrade-timeout", "1"],
    );
    let mut client = TcpStream::connect(family.addr()).expect("connect");
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");

    // A new binary that exits at once.
    installed.replace_with_script("#!/bin/sh\nexit 1\n");
    let from = family.log_len();
    signal(family.pid, Signal::USR2);
    let line = family.wait_log(from, "the new process exited before it was ready");
    assert!(line.contains("exit status: 1"), "{line}");
    still_serves(&family, &mut client);
    assert_eq!(
        children_of(family.pid),
        Vec::<u32>::new(),
        "the failed child was reaped"
    );

    // A new binary that never becomes ready; a second SIGUSR2 meanwhile.
    installed.replace_with_script("#!/bin/sh\nexec sleep 30\n");
    let from = family.log_len();
    signal(family.pid, Signal::USR2);
    family.wait_log(from, "waiting for READY=1");
    signal(family.pid, Signal::USR2);
    family.wait_log(from, "SIGUSR2 ignored: an upgrade is already under way");
    family.wait_log(from, "the new process was not ready in time");
    still_serves(&family, &mut client);
    assert_eq!(
        children_of(family.pid),
        Vec::<u32>::new(),
        "the killed child was reaped"
    );

    // The real binary again: the upgrade goes through.
    installed.restore();
    family.upgrade();
    Proto::Echo
        .exchange(family.addr(), 2)
        .expect("served by the new process");
    still_serves(&family, &mut client);
    drop(client);
    family.stop_all();
}

// ------------------------------------------------------ socket activation

/// A free loopback port (bound and released: systemd-socket-activate
/// takes no port 0).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind")
        .port()
}

/// Under `systemd-socket-activate`, which binds, waits for the first
/// connection, and execs the server with LISTEN_FDS: the server must not
/// bind --addr (an address it could not bind), serve every socket, and the
/// connection that woke it, waiting in the backlog, must be served.
fn systemd_socket_activate(listeners: usize) {
    let ports: Vec<u16> = (0..listeners).map(|_| free_port()).collect();
    let mut command = Command::new("systemd-socket-activate");
    for port in &ports {
        command.arg(format!("--listen=127.0.0.1:{port}"));
    }
    let names: Vec<String> = (0..listeners).map(|i| format!("sock{i}")).collect();
    command.arg(format!("--fdname={}", names.join(":"))).args([
        "-E",
        "NO_COLOR=1",
        exe(),
        "echo",
        "--addr",
        "192.0.2.1:9",
    ]);
    become_subreaper();
    let mut child = command
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("systemd-socket-activate (package systemd)");
    let (stdout, stderr) = (Lines::default(), Lines::default());
    collect(child.stdout.take().expect("stdout"), &stdout);
    collect(child.stderr.take().expect("stderr"), &stderr);
    wait_line(&stderr, 0, "systemd-socket-activate listening", |l| {
        l.contains(&format!("127.0.0.1:{}", ports[listeners - 1]))
    });
    let first: SocketAddr = format!("127.0.0.1:{}", ports[0]).parse().unwrap();
    Proto::Echo
        .exchange(first, 1)
        .expect("the connection that started it");
    wait_line(&stdout, listeners - 1, "the last address", |_| true);
    let printed: Vec<String> = stdout.lock().unwrap().clone();
    let expected: Vec<String> = ports
        .iter()
        .map(|p| format!("listening on 127.0.0.1:{p}"))
        .collect();
    assert_eq!(printed, expected);
    for (index, port) in ports.iter().enumerate() {
        let addr = format!("127.0.0.1:{port}").parse().unwrap();
        Proto::Echo.exchange(addr, index as u64).expect("served");
    }
    let log = stderr.lock().unwrap().join("\n");
    assert!(log.contains(&format!("sockets={listeners}")), "{log}");
    signal(child.id(), Signal::TERM);
    assert!(wait_child(&mut child).success());
}

#[test]
fn systemd_socket_activation_with_one_listener() {
    systemd_socket_activate(1);
}

#[test]
fn systemd_socket_activation_with_several_listeners() {
    systemd_socket_activate(3);
}

/// The library's own spawn: two SO_REUSEPORT sockets on one port and a
/// third on another, with connections already waiting in their backlogs
/// before the server exists; every one is served, in every mode.
#[test]
fn activation_by_the_library_serves_every_backlog_in_every_mode() {
    use socket2::{Domain, Socket, Type};
    become_subreaper();
    for mode in [
        &["--threads", "2"][..],
        &["--threads", "1"],
        &["--threads", "3"],
        &["--threads", "2", "--exclusive"],
        &["--threads", "2", "--mode", "acceptor"],
        &["--threads", "2", "--mode", "oneshot"],
    ] {
        let mut group_addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let mut sockets: Vec<TcpListener> = Vec::new();
        for index in 0..3 {
            let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
            socket.set_reuse_port(true).unwrap();
            let addr = if index < 2 {
                group_addr
            } else {
                "127.0.0.1:0".parse().unwrap()
            };
            socket.bind(&addr.into()).unwrap();
            socket.listen(128).unwrap();
            let listener: TcpListener = socket.into();
            if index == 0 {
                group_addr = listener.local_addr().unwrap();
            }
            sockets.push(listener);
        }
        let other = sockets[2].local_addr().unwrap();
        let mut waiting: Vec<(TcpStream, Vec<u8>)> = (0..30u8)
            .map(|i| {
                let addr = if i % 3 == 0 { other } else { group_addr };
                let mut stream = TcpStream::connect(addr).unwrap();
                stream
                    .set_read_timeout(Some(Duration::from_secs(5)))
                    .unwrap();
                let message = vec![b'a' + i % 26; 64];
                stream.write_all(&message).unwrap();
                (stream, message)
            })
            .collect();
        let mut args: Vec<OsString> = ["netloop", "echo", "--addr", "192.0.2.1:9"]
            .iter()
            .map(OsString::from)
            .collect();
        args.extend(mode.iter().map(OsString::from));
        let passed: Vec<_> = sockets.iter().map(|s| ("web", s.as_fd())).collect();
        let child = activation::spawn(exe().as_ref(), &args, &passed, &[]).expect("spawn");
        drop(sockets);
        for (index, (stream, message)) in waiting.iter_mut().enumerate() {
            let mut got = vec![0u8; message.len()];
            stream.read_exact(&mut got).unwrap_or_else(|e| {
                panic!("{mode:?}: connection {index} waiting in a backlog: {e}")
            });
            assert_eq!(&got, message);
        }
        drop(waiting);
        child.signal(libc::SIGTERM).expect("kill");
        assert!(child.wait().expect("wait").success(), "{mode:?}");
    }
}

/// LISTEN_PID names another process: the variables are not for this one
/// (a child that inherited them), so it binds --addr as usual.
#[test]
fn activation_variables_for_another_pid_are_ignored() {
    let mut command = Command::new(exe());
    command
        .args(["echo", "--addr", "127.0.0.1:0"])
        .env("LISTEN_PID", "1")
        .env("LISTEN_FDS", "1");
    let family = Family::start_with(&mut command, 1);
    Proto::Echo
        .exchange(family.addr(), 1)
        .expect("served on --addr");
    family.stop_all();
}

/// A passed socket that is not a listening TCP socket is refused with a
/// typed error, and the server exits non-zero instead of serving nothing.
#[test]
fn activation_refuses_a_socket_it_cannot_serve() {
    become_subreaper();
    let udp = UdpSocket::bind("127.0.0.1:0").expect("udp");
    let stderr =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("refuse-{}.err", std::process::id()));
    // A shell sends the server's stderr to a file and execs it (same pid,
    // so LISTEN_PID still names it).
    let shell: Vec<OsString> = vec![
        "sh".into(),
        "-c".into(),
        format!("exec \"$0\" echo 2>{}", stderr.display()).into(),
        OsString::from(exe()),
    ];
    let child =
        activation::spawn("/bin/sh".as_ref(), &shell, &[("dns", udp.as_fd())], &[]).expect("spawn");
    let status = child.wait().expect("wait");
    let log = std::fs::read_to_string(&stderr).unwrap_or_default();
    let _ = std::fs::remove_file(&stderr);
    assert!(!status.success(), "{log}");
    assert!(
        log.contains("descriptor 3 is not a TCP stream socket"),
        "{log}"
    );
}

/// Under systemd (Type=notify) the server says READY=1 once it listens,
/// and an upgrade tells systemd the new main pid.
#[test]
fn notify_socket_gets_ready_and_the_new_main_pid() {
    let path =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("notify-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let systemd = UnixDatagram::bind(&path).expect("bind notify socket");
    systemd
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut command = Command::new(exe());
    command
        .args(["echo", "--addr", "127.0.0.1:0"])
        .env("NOTIFY_SOCKET", &path);
    let mut family = Family::start_with(&mut command, 1);
    let mut message = [0u8; 512];
    let n = systemd.recv(&mut message).expect("READY=1");
    let ready = String::from_utf8_lossy(&message[..n]).to_string();
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready}");
    assert!(
        ready.contains(&format!("MAINPID={}", family.pid)),
        "{ready}"
    );
    let new_pid = family.upgrade();
    let n = systemd.recv(&mut message).expect("MAINPID=");
    assert_eq!(
        String::from_utf8_lossy(&message[..n]),
        format!("MAINPID={new_pid}")
    );
    // The new process passes systemd's socket on: its own upgrade reports too.
    let newer = family.upgrade();
    let n = systemd.recv(&mut message).expect("MAINPID=");
    assert_eq!(
        String::from_utf8_lossy(&message[..n]),
        format!("MAINPID={newer}")
    );
    family.stop_all();
    let _ = std::fs::remove_file(&path);
}
