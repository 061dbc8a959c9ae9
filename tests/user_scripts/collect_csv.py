"""A user's script: walk outputs/outputs_*/result.json and build a CSV of folder, emotion, confidence, timestamp."""
import csv
import json
import os
import sys

root, out = sys.argv[1], sys.argv[2]
with open(out, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["folder", "emotion", "confidence", "timestamp"])
    for name in sorted(os.listdir(root)):
        if name.startswith("outputs_"):
            with open(os.path.join(root, name, "result.json")) as r:
                result = json.load(r)
            writer.writerow([name, result["emotion"], result["confidence"], result["timestamp"]])
