mod durability;
mod failover;
mod membership;
mod metrics;
mod replication;
mod security;
