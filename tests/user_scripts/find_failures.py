"""A user's script: a missing or empty processed_audio.wav, a missing result.json or confidence < 0.3
is a failed or uncertain result. Prints one line per folder."""
import json
import os
import sys

root = sys.argv[1]
for name in sorted(os.listdir(root)):
    if not name.startswith("outputs_"):
        continue
    folder = os.path.join(root, name)
    wav = os.path.join(folder, "processed_audio.wav")
    result_path = os.path.join(folder, "result.json")
    if not os.path.exists(wav) or os.path.getsize(wav) == 0 or not os.path.exists(result_path):
        print(name, "failed")
        continue
    with open(result_path) as f:
        confidence = json.load(f)["confidence"]
    print(name, "uncertain" if confidence < 0.3 else "ok")
