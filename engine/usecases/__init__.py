"""The use cases the API, web and CLI call: intake, work on tasks, cancel/rework, settlement, process deployment,
export jobs and the timer tick. Each runs in the caller's unit of work."""
