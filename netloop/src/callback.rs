//! Calling the handler with its panics contained: a panic in a callback
//! costs the connection it was about, never the loop.

use std::any::Any;
use std::panic::{self, AssertUnwindSafe};

/// Runs `callback`, turning a panic into `Err` with the panic's message.
///
/// Unwind safety: the loop's own state is consistent between its calls
/// into the handler, which only reaches it through `Conn`/`Ctx` methods
/// that complete before they return. A handler's own fields may be left
/// half-updated; that is the handler's to guard, as with any panic.
pub(crate) fn guarded<R>(callback: impl FnOnce() -> R) -> Result<R, String> {
    panic::catch_unwind(AssertUnwindSafe(callback)).map_err(|payload| panic_message(&*payload))
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(message) = payload.downcast_ref::<&str>() {
        (*message).to_string()
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message.clone()
    } else {
        "a panic without a message".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_its_message_and_a_value_passes_through() {
        assert_eq!(guarded(|| 7), Ok(7));
        let formatted = guarded(|| -> () { panic!("bad input {}", 42) });
        assert_eq!(formatted, Err("bad input 42".to_string()));
        let literal = guarded(|| -> () { panic!("literal") });
        assert_eq!(literal, Err("literal".to_string()));
    }
}
