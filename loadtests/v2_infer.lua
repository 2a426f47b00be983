-- wrk script: POST V2 rows to a model's routed infer endpoint.
--   wrk -t1 -c32 -d60s -s loadtests/v2_infer.lua http://127.0.0.1:8000 -- breast-cancer
-- Each request scales every feature of a real row by a random factor in [0.8, 1.2], so the
-- gateway sees varied inputs. Model "diabetes" sends its 10 features instead of 30.
local rows = {
  ["breast-cancer"] = {17.99, 10.38, 122.8, 1001.0, 0.1184, 0.2776, 0.3001, 0.1471, 0.2419,
    0.07871, 1.095, 0.9053, 8.589, 153.4, 0.006399, 0.04904, 0.05373, 0.01587, 0.03003,
    0.006193, 25.38, 17.33, 184.6, 2019.0, 0.1622, 0.6656, 0.7119, 0.2654, 0.4601, 0.1189},
  ["diabetes"] = {0.038, 0.051, 0.062, 0.022, -0.044, -0.035, -0.043, -0.003, 0.020, -0.018},
}
local row, path

function init(args)
  local model = args[1] or "breast-cancer"
  row = rows[model]
  path = "/v2/models/" .. model .. "/infer"
  math.randomseed(os.time() + (tonumber(tostring({}):sub(8)) or 0))
end

function request()
  local values = {}
  for i, v in ipairs(row) do
    values[i] = string.format("%.6g", v * (0.8 + 0.4 * math.random()))
  end
  local body = '{"inputs":[{"name":"input","shape":[1,' .. #row ..
    '],"datatype":"FP32","data":[' .. table.concat(values, ",") .. ']}]}'
  return wrk.format("POST", path, {["content-type"] = "application/json"}, body)
end
