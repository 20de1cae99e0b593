mod backpressure;
mod durability;
mod failover;
mod membership;
mod metrics;
mod privsep;
mod replication;
mod security;
