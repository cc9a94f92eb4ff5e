"""Clickstream analytics: funnel, carts, categories and brands, prime time, revenue, sessions.

`clickrec analytics [--from-csv FILE]` runs `job.run`: it loads the events (the
lake, or a CSV through the replay's readers), removes repeated identical rows
(`kpis.DEDUP_KEYS`), computes the KPIs of `kpis` and writes them as a new
version of the artifact kind ``analytics``. The layout is stable (the API
serves it under ``/analytics/...``):

====================================  =========================================================
``analytics/<version>/...``           columns
====================================  =========================================================
``funnel.parquet``                    level (users|sessions), entities, viewed, carted,
                                      purchased, cart_rate, purchase_rate, conversion
``event_counts.parquet``              event_type, events, share
``cart_conversion_by_category.parquet``  category_code, carts, converted, conversion_rate,
                                      abandonment_rate (groups with >= min_support carts)
``cart_conversion_by_brand.parquet``  brand, carts, converted, conversion_rate, abandonment_rate
``categories.parquet``                category_code, purchases, revenue, buyers,
                                      rank_by_purchases, rank_by_revenue
``top_brands_by_category.parquet``    category_code, rank, brand, purchases, revenue
``purchases_by_hour.parquet``         hour (0-23), purchases, revenue, share, time_zone ("UTC")
``purchases_by_day_of_month.parquet`` day (1-31), purchases, revenue, share, time_zone
``revenue_daily.parquet``             date (YYYY-MM-DD), purchases, revenue, buyers, time_zone
``revenue_monthly.parquet``           month (YYYY-MM), purchases, revenue, buyers, time_zone
``top_customers.parquet``             rank, user_id, purchases, spend, sessions
``session_stats.parquet``             sessions, mean_length_s, median_length_s, mean_events,
                                      mean_events_with_purchase (one row)
``manifest.json``                     data_range, rows_before_dedup, rows_after_dedup,
                                      duplicates_removed, options, tables (rows each), timings_s
====================================  =========================================================

Definitions (time zone, revenue, funnel, cart abandonment, session length) are
in `spark_jobs.analytics.kpis`. A session's journey is computed on request
(`kpis.session_journey`, `clickrec analytics --session ID`), not stored.
"""
