"""The API's routes, one router per subject: series data, operations, the live stream."""
