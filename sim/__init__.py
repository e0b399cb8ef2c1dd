"""The simulated promotion and the reference bidder (docs/SIMULATOR.md).

Public interface:
- `sim.scenario`: `load_scenario(name)`, `load_scenario_file(path)`, `parse_scenario(text)`,
  `dump_scenario(s)`, `ScenarioError`.
- `sim.kit.prepare(scenario, data_dir) -> Kit` (catalog, trained bidders, history, rule pool).
- `sim.engine.Simulation(scenario, seed, bidders, history, pool).step(overrides=, guards=,
  kill_switch=) -> BucketResult` (decisions, feature matrix, outcome increments).
- `sim.stress.run_stress(...)` / `run_arm(...)`, the guard hook (`GuardHook`).
- `sim.crn`: the keyed draws (`KeyedDraws(seed).uniform(purpose, minute, shape)`) and exact
  inverse-CDF samplers; docs/SIMULATOR.md, "Randomness: common random numbers".
- `sim.live.run_live(engine, settings, clock, speed, stop_event, ...)`, `step_live(...)`.
- `sim.replay.replay(path, bidder, ReplayConfig)`, `resolve_bidder(spec)`.
- `sim.train.train_models(catalog, models_dir)`, `ensure_models(...)`; `sim.bidder.load_bidder(folder)`.
"""
