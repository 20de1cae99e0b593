//! The container images and docker-compose deployment of `deploy/`, driven through Docker.

mod compose;
