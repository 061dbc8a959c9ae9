"""What the tests expect of every checkpoint made with the real tokens.txt (tiny, base and large alike)."""

# the display names of emotion2vec+ large's tokens.txt, in score order
REAL_LABELS = ["angry", "disgusted", "fearful", "happy", "neutral", "other", "sad", "surprised", "unknown"]
