#!/usr/bin/env bash
# Score one clip with curl and jq: KServe v2 JSON over HTTPS through the gateway, with the bearer token.
#   E2V_URL=host:8443 E2V_TOKEN_FILE=token E2V_ROOT_CERT=gateway.crt ./score.sh clip.f32
# clip.f32 holds raw float32 little-endian samples, 16 kHz mono, one utterance (30 s at most by default):
#   ffmpeg -i clip.m4a -ac 1 -ar 16000 -f f32le clip.f32
set -euo pipefail
clip=${1:?usage: score.sh CLIP.f32 (raw float32 little-endian, 16 kHz mono)}
[ -s "$clip" ] || { echo "score.sh: no samples in $clip" >&2; exit 1; }
model="https://${E2V_URL:?set E2V_URL=HOST:PORT}/v2/models/emotion2vec"
token=$(tr -d '[:space:]' <"${E2V_TOKEN_FILE:?set E2V_TOKEN_FILE}")  # the file holds the token alone

# One KServe v2 call; prints the JSON answer. The token reaches curl as a header file (-H @<(...); printf is
# a shell builtin), never as an argument: arguments (--oauth2-bearer TOKEN, -H "Authorization: ...") show in ps.
v2() {
  local answer
  answer=$(curl --silent --show-error --cacert "${E2V_ROOT_CERT:?set E2V_ROOT_CERT}" \
    -H @<(printf 'Authorization: Bearer %s\n' "$token") --write-out '\n%{http_code}' "$@") || exit
  case ${answer##*$'\n'} in
    200) printf '%s\n' "${answer%$'\n'*}" ;;
    401) echo "score.sh: the server refused the token in $E2V_TOKEN_FILE (HTTP 401)" >&2; exit 1 ;;
    *) echo "score.sh: HTTP ${answer##*$'\n'} from $1: ${answer%$'\n'*}" >&2; exit 1 ;;
  esac
}

# the labels, in score order, are a parameter of the model's config
labels=$(v2 "$model/config" | jq -c '.parameters.labels.string_value | split(",")')
# the samples as JSON numbers (od prints each float32 exactly), one request of shape [1, N]
answer=$(od -An -v -f "$clip" |
  jq -sc '{inputs: [{name: "AUDIO", datatype: "FP32", shape: [1, length], data: .}], outputs: [{name: "SCORES"}]}' |
  v2 "$model/infer" -H 'Content-Type: application/json' --data-binary @-)
jq -r --argjson labels "$labels" \
  '.outputs[] | select(.name == "SCORES") | .data | to_entries[] | "\($labels[.key]): \(.value)"' <<<"$answer"
