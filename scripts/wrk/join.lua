-- wrk: each request a new fan joining the line of one concert.
-- FANS_FILE holds "USER-ID TOKEN" lines (`ticketctl login --fans N`);
-- CONCERT_ID is the concert. Each wrk thread takes every n-th fan, so no
-- two requests join as the same fan (a repeat would be the idempotent
-- "already in line" answer, not an issue).
local fans = {}
local next_fan = 1
thread_index = 1
local threads = 1
local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("thread_index", counter)
end

function init(args)
  for line in io.lines(os.getenv("FANS_FILE")) do
    local _, token = line:match("(%S+) (%S+)")
    fans[#fans + 1] = token
  end
  threads = tonumber(os.getenv("WRK_THREADS") or "1")
  next_fan = thread_index
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.body = '{"concert_id":"' .. os.getenv("CONCERT_ID") .. '"}'
end

function request()
  local token = fans[next_fan]
  if token == nil then
    -- Out of fans: join again as this thread's first (200, "already in line").
    token = fans[thread_index]
  end
  next_fan = next_fan + threads
  wrk.headers["Authorization"] = "Bearer " .. token
  return wrk.format(nil, "/v1/queue/tokens")
end
