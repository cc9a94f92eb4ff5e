"""Batch candidate generation: weighted interactions, ALS (implicit or Spark MLlib), item-item, popular lists."""
