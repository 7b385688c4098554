"""The search's last stage: its top trials promoted into an ensemble.

    python -m ensemble results/<name>                        build ensemble.json and prediction.csv
    python -m ensemble.predict results/<name> IMAGES --out F predict any folder with the saved ensemble

Driver side (candidates, tasks, strategies, build, report) needs no torch: it gathers logits and selects.
The torch side (scoring) runs in Ray tasks with the trials' resources, next to their checkpoints.
"""
