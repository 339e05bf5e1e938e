"""Health checks on the till: pure rules (``rules``) and hysteresis (``state``) over samples the
thin samplers take (``samplers``), run on a schedule by ``monitor`` into the durable outbox."""
