"""Running a matrix: the plan, the driver, the worker that trains and attacks, the
seal and the executors. Internal to bench."""
