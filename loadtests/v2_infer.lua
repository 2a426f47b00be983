-- wrk script: POST V2 infer bodies to a model's endpoint; done() prints one JSON line.
--   wrk -t1 -c32 -d15s -s loadtests/v2_infer.lua http://127.0.0.1:8000 -- breast-cancer
--   wrk ... -- MODEL [PATH] [BODIES]
-- MODEL: breast-cancer (30 features) or diabetes (10). PATH: the request path (default
-- /v2/models/MODEL/infer). BODIES: a file with one V2 JSON body a line (real rows, written by
-- `python -m loadtests.payloads MODEL`); without it, a built-in real row with every feature
-- scaled by a random factor in [0.8, 1.2], so the gateway still sees varied inputs.
-- Requests are prebuilt in init() and cycled, so wrk spends no time formatting numbers.
-- No response() function on purpose: defining one makes wrk parse every response in Lua.
local rows = {
  ["breast-cancer"] = {17.99, 10.38, 122.8, 1001.0, 0.1184, 0.2776, 0.3001, 0.1471, 0.2419,
    0.07871, 1.095, 0.9053, 8.589, 153.4, 0.006399, 0.04904, 0.05373, 0.01587, 0.03003,
    0.006193, 25.38, 17.33, 184.6, 2019.0, 0.1622, 0.6656, 0.7119, 0.2654, 0.4601, 0.1189},
  ["diabetes"] = {0.038, 0.051, 0.062, 0.022, -0.044, -0.035, -0.043, -0.003, 0.020, -0.018},
}
local requests = {}
local index = 0

local function scaled_body(row)
  local values = {}
  for i, v in ipairs(row) do
    values[i] = string.format("%.6g", v * (0.8 + 0.4 * math.random()))
  end
  return '{"inputs":[{"name":"input","shape":[1,' .. #row ..
    '],"datatype":"FP32","data":[' .. table.concat(values, ",") .. ']}]}'
end

function init(args)
  local model = args[1] or "breast-cancer"
  local path = args[2]
  if path == nil or path == "" then path = "/v2/models/" .. model .. "/infer" end
  local headers = {["Content-Type"] = "application/json"}
  local bodies = {}
  if args[3] ~= nil and args[3] ~= "" then
    for line in io.lines(args[3]) do
      if line ~= "" then bodies[#bodies + 1] = line end
    end
  else
    math.randomseed(os.time() + (tonumber(tostring({}):sub(8)) or 0))
    local row = rows[model] or error("no built-in row for model " .. model)
    for i = 1, 256 do bodies[i] = scaled_body(row) end
  end
  for i, body in ipairs(bodies) do
    requests[i] = wrk.format("POST", path, headers, body)
  end
end

function request()
  index = index % #requests + 1
  return requests[index]
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"wrk":1,"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"min":%d,"mean":%.1f,"stdev":%.1f,"p50":%d,"p90":%d,"p99":%d,' ..
    '"p99.9":%d,"max":%d}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency.stdev, latency:percentile(50),
    latency:percentile(90), latency:percentile(99), latency:percentile(99.9), latency.max))
end
