"""The bundled benchmark: minute-long generated videos with sound, captions and a ground-truth oracle.

    plan.py      what happens in each video (objects, motions, sound events, their times)
    visuals.py   the frames       sounds.py  the soundtrack      captions.py  the paragraphs
    generate.py  make_benchmark: videos + train/val/test manifests, reproducible from a seed
    oracle.py    which caption facts each frame/window reveals; the oracle's R@1
"""
