mod durability;
mod membership;
mod metrics;
mod replication;
mod security;
