"""MLflow tracking: the Tune callback that mirrors a search into MLflow (`callback`) and the one
process that writes to the store (`writer`)."""
