"""Drop-in modules that let scripts written for other trackers record to Runstream.

    import runstream.compat.wandb as wandb      # a wandb script, unchanged below

See ``runstream.compat.wandb`` for what is covered and how it maps.
"""
