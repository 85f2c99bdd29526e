"""Check unet-natural's training photographs (BSD400 + the wheels') against test-image folders by content.

    OMP_NUM_THREADS=1 python tools/check_train_disjoint.py SET11_DIR [MORE_TEST_DIRS ...]

Exits non-zero (AccelError) if a training image is a copy or a resized crop of a test image; prints the
highest scores otherwise.
"""
import sys
import time

from accel.photographs import check_no_test_crops, training_photographs

t0 = time.time()
train = training_photographs()
found = check_no_test_crops(train, sys.argv[1:])
for kind, limit in (("whole", 0.9), ("crops", 0.9)):
    print(f"{kind}: highest correlations (limit {limit}):")
    for name, (t, s) in sorted(found[kind].items(), key=lambda kv: -kv[1][1])[:5]:
        print(f"  {name}  {t}  {s:.3f}")
print(f"{len(train)} training images, {len(sys.argv) - 1} test folders: disjoint ({time.time() - t0:.0f} s)")
