-- wrk script for bench/loadgen.py `run_wrk`: replays a plan file written by Python.
--
-- Plan file (one value per line): method, default path, default body ("" for none), thread count, offset,
-- then "H <Name>: <value>" fixed headers and "I <token>\t<path>\t<body>\t<x-forwarded-for>" items
-- (empty fields fall back to the defaults). Thread t of T sends items offset+t, offset+t+T, ...; when it
-- runs past the end it starts again and counts a wrap (a "once" plan sized too small shows up there).
-- done() prints one JSON line: status counts, wraps and wrk's latency percentiles in microseconds.

local threads = {}
local counter = 0

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

local function split(line)
  local out = {}
  for field in (line .. "\t"):gmatch("([^\t]*)\t") do
    table.insert(out, field)
  end
  return out
end

function init(args)
  local f = assert(io.open(args[1], "r"))
  method = f:read("*l")
  defpath = f:read("*l")
  defbody = f:read("*l")
  if defbody == "" then defbody = nil end
  step = tonumber(f:read("*l"))
  local offset = tonumber(f:read("*l"))
  headers = {}
  items = {}
  for line in f:lines() do
    local kind = line:sub(1, 2)
    if kind == "H " then
      local k, v = line:sub(3):match("^([^:]+):%s*(.*)$")
      headers[k] = v
    elseif kind == "I " then
      table.insert(items, line:sub(3))
    end
  end
  f:close()
  pos = offset + id
  statuses = {}
  timing = {}  -- Server-Timing dur of answers that carry one (shed answers), in 0.05 ms buckets
  wraps = 0
end

function request()
  local h = {}
  for k, v in pairs(headers) do h[k] = v end
  local n = #items
  if n == 0 then
    return wrk.format(method, defpath, h, defbody)
  end
  if pos >= n then
    pos = pos % n
    wraps = wraps + 1
  end
  local item = split(items[pos + 1])
  pos = pos + step
  local token, path, body, ip = item[1], item[2], item[3], item[4]
  if token ~= nil and token ~= "" then h["Authorization"] = "Bearer " .. token end
  if ip ~= nil and ip ~= "" then h["X-Forwarded-For"] = ip end
  if path == nil or path == "" then path = defpath end
  if body == nil or body == "" then body = defbody end
  if body ~= nil then h["Content-Type"] = "application/json" end
  return wrk.format(method, path, h, body)
end

function response(status, hdrs, body)
  statuses[status] = (statuses[status] or 0) + 1
  local st = hdrs["Server-Timing"]
  if st ~= nil then
    local d = tonumber(st:match("dur=([%d%.]+)"))
    if d ~= nil then
      local b = math.floor(d * 20)
      timing[b] = (timing[b] or 0) + 1
    end
  end
end

function done(summary, latency, requests)
  local agg, tagg, wrapped = {}, {}, 0
  for _, t in ipairs(threads) do
    local s = t:get("statuses")
    for k, v in pairs(s) do agg[k] = (agg[k] or 0) + v end
    for k, v in pairs(t:get("timing")) do tagg[k] = (tagg[k] or 0) + v end
    wrapped = wrapped + t:get("wraps")
  end
  local parts, tparts = {}, {}
  for k, v in pairs(agg) do table.insert(parts, string.format('"%d": %d', k, v)) end
  for k, v in pairs(tagg) do table.insert(tparts, string.format('"%d": %d', k, v)) end
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests": %d, "duration_us": %d, "status": {%s}, "server_timing_20ths_ms": {%s}, "wraps": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "timeout": %d}, ' ..
    '"latency_us": {"mean": %.1f, "p50": %d, "p90": %d, "p99": %d, "max": %d}}\n',
    summary.requests, summary.duration, table.concat(parts, ", "), table.concat(tparts, ", "), wrapped,
    e.connect, e.read, e.write, e.timeout,
    latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
