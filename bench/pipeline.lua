-- wrk script: HTTP/1.1 pipelining, DEPTH GETs of / in every write (default 16),
-- in the manner of wrk's scripts/pipeline.lua.
--
--   wrk -t1 -c50 -d5s --latency -s bench/pipeline.lua http://127.0.0.1:PORT/ -- 16
--
-- Counting: wrk parses every response and counts each one in "N requests"
-- and Requests/sec, so those are per request, not per batch. Its latency,
-- however, is recorded once per batch (when the last of the DEPTH responses
-- arrives), so the percentiles are batch round-trip times.

local depth = 16

init = function(args)
   depth = tonumber(args[1]) or depth
   local r = {}
   for i = 1, depth do
      r[i] = wrk.format("GET", "/")
   end
   req = table.concat(r)
end

request = function()
   return req
end
