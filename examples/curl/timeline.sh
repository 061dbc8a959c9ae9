#!/usr/bin/env bash
# The emotion timeline of a recording with curl and jq: its speech segments, each with its emotion, through the
# gateway (KServe v2 JSON over HTTPS, bearer token). Prints "START-END EMOTION CONFIDENCE", one line a segment.
#   E2V_URL=host:8443 E2V_TOKEN_FILE=token E2V_ROOT_CERT=gateway.crt ./timeline.sh recording.f32
# recording.f32 holds raw float32 little-endian samples, 16 kHz mono, of any length:
#   ffmpeg -i call.m4a -ac 1 -ar 16000 -f f32le recording.f32
set -euo pipefail
recording=${1:?usage: timeline.sh RECORDING.f32 (raw float32 little-endian, 16 kHz mono)}
[ -s "$recording" ] || { echo "timeline.sh: no samples in $recording" >&2; exit 1; }
server="https://${E2V_URL:?set E2V_URL=HOST:PORT}/v2/models"
token=$(tr -d '[:space:]' <"${E2V_TOKEN_FILE:?set E2V_TOKEN_FILE}")  # the file holds the token alone
work=$(mktemp -d) && trap 'rm -rf "$work"' EXIT

# One KServe v2 call; prints the JSON answer. The token reaches curl as a header file, never as an argument.
v2() {
  local answer
  answer=$(curl --silent --show-error --cacert "${E2V_ROOT_CERT:?set E2V_ROOT_CERT}" \
    -H @<(printf 'Authorization: Bearer %s\n' "$token") --write-out '\n%{http_code}' "$@") || exit
  case ${answer##*$'\n'} in
    200) printf '%s\n' "${answer%$'\n'*}" ;;
    401) echo "timeline.sh: the server refused the token in $E2V_TOKEN_FILE (HTTP 401)" >&2; exit 1 ;;
    *) echo "timeline.sh: HTTP ${answer##*$'\n'} from $1: ${answer%$'\n'*}" >&2; exit 1 ;;
  esac
}

# the labels and the longest piece one request may hold are parameters of the ensemble's config
v2 "$server/emotion2vec/config" >"$work/config"
labels=$(jq -c '.parameters.labels.string_value | split(",")' "$work/config")
piece=$(jq '.parameters.max_seconds.string_value | tonumber * 16000 | floor' "$work/config")  # samples
total=$(($(stat -c %s "$recording") / 4))

# The recording goes in pieces; each answer gives the segments closed so far, the STATE to send back with
# the next piece and RESUME_AT, the sample that piece starts at. The server keeps nothing between pieces.
start=0
printf '' >"$work/state"
while :; do
  last=$([ $((start + piece)) -ge "$total" ] && echo true || echo false)
  od -An -v -f -j $((4 * start)) -N $((4 * piece)) "$recording" |
    jq -sc --argjson last "$last" --rawfile state "$work/state" '{
      parameters: {last_piece: $last},
      inputs: ([{name: "AUDIO", datatype: "FP32", shape: [1, length], data: .}]
        + if $state == "" then [] else [{name: "STATE", datatype: "BYTES", shape: [1], data: [$state]}] end)
    }' >"$work/request"
  v2 "$server/emotion2vec_segments/infer" -H 'Content-Type: application/json' --data-binary @"$work/request" \
    >"$work/answer"
  # one line per segment: start-end (seconds), the top label of its scores and that score
  jq -r --argjson labels "$labels" '
    (.outputs[] | select(.name == "SEGMENT_TIMES") | .data) as $times
    | (.outputs[] | select(.name == "SEGMENT_SCORES") | .data) as $scores
    | ($labels | length) as $n
    | range(0; $times | length / 2) as $i
    | [$scores[$i * $n:($i + 1) * $n] | to_entries | max_by(.value)][0] as $top
    | "\($times[2 * $i])-\($times[2 * $i + 1]) \($labels[$top.key]) \($top.value)"' "$work/answer"
  [ "$last" = true ] && break
  start=$(jq '.outputs[] | select(.name == "RESUME_AT") | .data[0]' "$work/answer")
  jq -j '.outputs[] | select(.name == "STATE") | .data[0]' "$work/answer" >"$work/state"
done
