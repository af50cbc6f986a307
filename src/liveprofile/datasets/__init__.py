"""Datasets for tests, demos and benchmarks, as event sources: ``synthetic`` (e-commerce funnels
with a planted drift and known ground truth), ``movielens`` (ratings with genres as tags) and
``completejourney`` (1.47M grocery transactions, the quick start); ``logins`` turns a stream under
user ids into one whose visitors browse anonymously and log in at their first purchase."""
