// Every test that boots a machine pins kernel threads to the CPUs: running them side by side
// would only measure the scheduler. One at a time.
[assembly: CollectionBehavior(DisableTestParallelization = true)]
