"""Studies built on the library: the demo, the ablation grid, FLOPs/memory/speed, sound localisation.

    from eclipse_lite.studies import bench, saliency
    from eclipse_lite.studies.demo import run_demo
"""
