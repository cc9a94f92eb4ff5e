"""Session purchase-probability model: P(the session holds a purchase after this point).

- `features`: leak-free prefix features (`session_features` for one live session,
  `build_training_set` for a whole table; one implementation for both).
- `model`: temporal split, XGBoost training, metrics, the ``purchase_model``
  artifact (`publish` / `load_model`) and `score_session`, the request path.
- `metrics`: AUC, PR-AUC, accuracy vs the majority class (scikit-learn's metrics).

See README.md in this folder for the precise definitions, the measured figures
and why they are not comparable to a "78% accuracy" that had the label among its inputs.
"""
