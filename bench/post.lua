-- wrk script for bench/run.sh: POST a body of BODY_SIZE bytes (default: the 13-byte
-- "Hello, World!") and print one machine-readable summary line at the end.
local size = tonumber(os.getenv("BODY_SIZE") or "13")

wrk.method = "POST"
wrk.headers["Content-Type"] = "text/plain"
if size == 13 then
  wrk.body = "Hello, World!"
else
  wrk.body = string.rep("x", size)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d errors=%d non2xx=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout, e.status))
end
