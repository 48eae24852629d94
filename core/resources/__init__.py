"""The resources of the API as services: assistants, threads and their state, runs
(admission and the multitask decision), crons and the store. Called by the HTTP layer;
they call the run engine and the infrastructure below them.
"""
