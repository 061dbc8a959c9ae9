"""A user's script: load result.json, print emotion and confidence, iterate the scores."""
import json
import sys

for folder in sys.argv[1:]:
    with open(f"{folder}/result.json") as f:
        result = json.load(f)
    print(result["emotion"], result["confidence"])
    for label, score in result["scores"].items():
        print(f"  {label}: {score:.3f}")
