mod durability;
mod membership;
mod replication;
mod security;
