"""The built-in agents, one module each: ``agents.bdpl``, ``agents.bbt``, ``agents.random_search``,
``agents.manual`` (template, calibration, in-context learning), ``agents.sb3`` (Stable-Baselines3)
and ``agents.prompt_tuning`` (the white-box reference).

Nothing is imported here on purpose: ``import agents.bbt`` must not pull in torch and SB3 for the
others. The contract every agent follows (``Result``, ``DevSelector``, ``AgentConfig``,
``ConfiguredAgent``) and the registry (``make_agent``, ``check_compatible``, ``register_agent``)
live in :mod:`promptgym.agent`; see ``docs/custom_agent.py`` for an agent of your own.
"""
