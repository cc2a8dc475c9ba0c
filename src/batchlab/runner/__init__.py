"""Running studies: the plan, the driver, the recorder (the store's only writer), executors, workers, progress."""
