"""Job execution in workers: ``runner.run_job(services, job_id)`` runs one tool job.

``context`` builds what a command template sees, ``execution`` runs the rendered command
(process group, clean environment, wall time, capped output), ``monitor`` watches the
running jobs of a process (cancellation, heartbeats, process groups).
"""
