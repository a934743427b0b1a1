//! `GET /replica?db=&measurement=[&tag=]`: where a shard key lives, at run
//! time (the answer `influx-proxy check --key` prints).
//!
//! Answer (200, JSON):
//!
//! ```json
//! {"db": "telegraf", "measurement": "cpu", "tag": null,
//!  "shard_group": "main", "shard_tag": null, "replication_factor": 2,
//!  "replicas": ["b", "c"]}
//! ```
//!
//! `replicas` are backend names, sorted by name.
//! `shard_group` is `null` for a measurement routed by an explicit keymap
//! (then `replication_factor` is the size of its replica set and `tag` plays
//! no part); `shard_tag` is the group's tag, if it shards by one; `tag` echoes
//! the `tag` parameter (`null` when not given: the shard of the empty value
//! in a group sharded by a tag, see [`crate::shard_group`]). Errors: 400
//! InfluxDB-style (`{"error": "..."}`) for a missing `db` or `measurement`,
//! or a measurement with no route.

use super::{allow, Proxy};
use crate::error::ProxyError;
use crate::http::{Method, Request, Response};
use crate::route::Route;
use crate::storage::Storage;
use crate::transport::Transport;
use serde_json::json;

impl<T: Transport, S: Storage> Proxy<T, S> {
    pub(super) fn replica(&self, request: &Request) -> Result<Response, ProxyError> {
        allow(request, &[Method::Get, Method::Head])?;
        let required = |name: &str| {
            request
                .param(name)
                .filter(|v| !v.is_empty())
                .ok_or_else(|| ProxyError::BadRequest(format!("missing required parameter \"{name}\"")))
        };
        let db = required("db")?;
        let measurement = required("measurement")?;
        let tag = request.param("tag");
        let topology = self.topology();
        let route = topology.router.route(measurement).ok_or_else(|| {
            ProxyError::BadRequest(format!(
                "no route for measurement \"{measurement}\": add a keymap or \"_default_\""
            ))
        })?;
        let (group, replicas) = match route {
            Route::Set(set) => (None, set.clone()),
            Route::Group(group) => (Some(group), group.replicas(db, measurement, tag)),
        };
        let mut names: Vec<&str> =
            replicas.iter().filter_map(|&i| topology.backends.get(i)).map(|b| b.name.as_str()).collect();
        crate::sort::sort_unstable(&mut names);
        let body = json!({
            "db": db,
            "measurement": measurement,
            "tag": tag,
            "shard_group": group.map(|g| g.name()),
            "shard_tag": group.and_then(|g| g.shard_tag()),
            "replication_factor": group.map_or(replicas.len(), |g| g.replication_factor()),
            "replicas": names,
        });
        Ok(Response::json(200, body.to_string().into_bytes()))
    }
}
