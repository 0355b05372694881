//! Several instances on one database: the `instances` heartbeat and the `source_leases`
//! that let one instance at a time poll each source. Every time here is the database's
//! clock (unix milliseconds), so the hosts' clocks never decide who holds a lease.

use serde::Serialize;
use sqlx::Row;

use super::{Result, Store};

/// The database's clock in unix milliseconds, per dialect.
macro_rules! sqlite_now {
    () => {
        "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)"
    };
}
macro_rules! pg_now {
    () => {
        "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)"
    };
}

/// One instance as `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstanceRow {
    pub name: String,
    pub host: String,
    pub started_at: i64,
    pub last_heartbeat_at: i64,
    /// Whether its heartbeat is younger than the lease `status` was given: false for an
    /// instance that stopped without a clean stop (killed, its host gone), whose row
    /// stays until an instance of the same name starts again.
    pub live: bool,
    /// The sources whose lease it holds now.
    pub sources: Vec<String>,
    /// Deliveries leased under its name and not finished, whose lease has not run out: in
    /// flight, or (for an instance that is gone) waiting for their lease to run out
    /// before another instance retries them.
    pub deliveries_in_flight: i64,
}

/// The owner a dispatcher writes on the deliveries it claims: the instance's name, then
/// what makes it unique to one process and one generation of its connectors
/// (`<instance>/<pid>-<random>`), so `status` can count each instance's deliveries in
/// flight and shutdown releases exactly its own.
pub fn delivery_owner(instance: &str) -> String {
    format!(
        "{instance}/{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}

/// The instance of a [`delivery_owner`] (the name may itself hold a `/`); None for an
/// owner written by a version that did not name the instance.
pub fn owner_instance(owner: &str) -> Option<&str> {
    owner.rsplit_once('/').map(|(instance, _)| instance)
}

/// Who runs: one process of one instance.
#[derive(Debug, Clone)]
pub struct Holder {
    pub name: String,
    pub host: String,
    /// Unique per process: a restarted instance (same name) does not inherit its
    /// predecessor's leases, and two processes misconfigured with one name do not share
    /// one.
    pub token: String,
    pub started_at: i64,
}

impl Store {
    /// Records that `holder` is alive now.
    pub async fn heartbeat(&self, holder: &Holder) -> Result<()> {
        on_pool!(
            self,
            (
                concat!(
                    "INSERT INTO instances (name, host, token, started_at, last_heartbeat_at) VALUES (?, ?, ?, ?, ",
                    sqlite_now!(),
                    ") ON CONFLICT (name) DO UPDATE SET host = excluded.host, token = excluded.token,
                       started_at = excluded.started_at, last_heartbeat_at = excluded.last_heartbeat_at"
                ),
                concat!(
                    "INSERT INTO instances (name, host, token, started_at, last_heartbeat_at) VALUES ($1, $2, $3, $4, ",
                    pg_now!(),
                    ") ON CONFLICT (name) DO UPDATE SET host = excluded.host, token = excluded.token,
                       started_at = excluded.started_at, last_heartbeat_at = excluded.last_heartbeat_at"
                )
            ),
            |sql, ex| sqlx::query(sql)
                .bind(&holder.name)
                .bind(&holder.host)
                .bind(&holder.token)
                .bind(holder.started_at)
                .execute(ex)
                .await?
                .rows_affected()
        );
        Ok(())
    }

    /// Takes or renews the lease on `source` for `lease_ms` from now: true when `holder`
    /// holds it (it held it already, or the last holder's lease had run out), false when
    /// another process holds it. One statement, so two instances racing for a free lease
    /// cannot both win.
    pub async fn hold_lease(&self, source: &str, holder: &Holder, lease_ms: i64) -> Result<bool> {
        Ok(on_pool!(
            self,
            (
                concat!(
                    "INSERT INTO source_leases (source, instance, token, acquired_at, expires_at) VALUES (?, ?, ?, ",
                    sqlite_now!(),
                    ", ",
                    sqlite_now!(),
                    " + ?) ON CONFLICT (source) DO UPDATE SET instance = excluded.instance, token = excluded.token,
                       acquired_at = CASE WHEN source_leases.token = excluded.token THEN source_leases.acquired_at ELSE excluded.acquired_at END,
                       expires_at = excluded.expires_at
                     WHERE source_leases.token = excluded.token OR source_leases.expires_at <= excluded.acquired_at"
                ),
                concat!(
                    "INSERT INTO source_leases (source, instance, token, acquired_at, expires_at) VALUES ($1, $2, $3, ",
                    pg_now!(),
                    ", ",
                    pg_now!(),
                    " + $4) ON CONFLICT (source) DO UPDATE SET instance = excluded.instance, token = excluded.token,
                       acquired_at = CASE WHEN source_leases.token = excluded.token THEN source_leases.acquired_at ELSE excluded.acquired_at END,
                       expires_at = excluded.expires_at
                     WHERE source_leases.token = excluded.token OR source_leases.expires_at <= excluded.acquired_at"
                )
            ),
            |sql, ex| sqlx::query(sql)
                .bind(source)
                .bind(&holder.name)
                .bind(&holder.token)
                .bind(lease_ms)
                .execute(ex)
                .await?
                .rows_affected()
        ) == 1)
    }

    /// Gives up `holder`'s leases and its heartbeat (a clean stop): another instance
    /// takes the sources over at its next renewal instead of after the lease.
    pub async fn release_source_leases(&self, holder: &Holder) -> Result<()> {
        on_pool!(
            self,
            (
                "DELETE FROM source_leases WHERE token = ?",
                "DELETE FROM source_leases WHERE token = $1"
            ),
            |sql, ex| sqlx::query(sql)
                .bind(&holder.token)
                .execute(ex)
                .await?
                .rows_affected()
        );
        on_pool!(
            self,
            (
                "DELETE FROM instances WHERE token = ?",
                "DELETE FROM instances WHERE token = $1"
            ),
            |sql, ex| sqlx::query(sql)
                .bind(&holder.token)
                .execute(ex)
                .await?
                .rows_affected()
        );
        Ok(())
    }

    /// Instances whose heartbeat is younger than `within_ms`.
    pub async fn live_instances(&self, within_ms: i64) -> Result<i64> {
        Ok(on_pool!(
            self,
            (
                concat!(
                    "SELECT COUNT(*) FROM instances WHERE last_heartbeat_at > ",
                    sqlite_now!(),
                    " - ?"
                ),
                concat!(
                    "SELECT COUNT(*) FROM instances WHERE last_heartbeat_at > ",
                    pg_now!(),
                    " - $1"
                )
            ),
            |sql, ex| sqlx::query_scalar::<_, i64>(sql)
                .bind(within_ms)
                .fetch_one(ex)
                .await?
        ))
    }

    /// Every instance that has run on this database (and not stopped cleanly), with the
    /// sources whose lease it holds now and its deliveries in flight; `live` when its
    /// heartbeat is younger than `live_within_ms` (the lease).
    pub async fn instances(&self, live_within_ms: i64) -> Result<Vec<InstanceRow>> {
        let mut instances: Vec<InstanceRow> = on_pool!(
            self,
            (
                concat!(
                    "SELECT name, host, started_at, last_heartbeat_at, last_heartbeat_at > ",
                    sqlite_now!(),
                    " - ? AS live FROM instances ORDER BY name"
                ),
                concat!(
                    "SELECT name, host, started_at, last_heartbeat_at, last_heartbeat_at > ",
                    pg_now!(),
                    " - $1 AS live FROM instances ORDER BY name"
                )
            ),
            |sql, ex| sqlx::query(sql)
                .bind(live_within_ms)
                .fetch_all(ex)
                .await?
                .into_iter()
                .map(|row| InstanceRow {
                    name: row.get("name"),
                    host: row.get("host"),
                    started_at: row.get("started_at"),
                    last_heartbeat_at: row.get("last_heartbeat_at"),
                    live: row.get("live"),
                    sources: Vec::new(),
                    deliveries_in_flight: 0,
                })
                .collect()
        );
        // Delivery leases are written by the dispatchers' clocks, not the database's:
        // compared with this host's, as the dispatchers themselves do.
        let owners: Vec<(String, i64)> = on_pool!(
            self,
            (
                "SELECT lease_owner, COUNT(*) AS n FROM deliveries
                 WHERE status = 'pending' AND lease_owner IS NOT NULL AND lease_until > ?
                 GROUP BY lease_owner",
                "SELECT lease_owner, COUNT(*) AS n FROM deliveries
                 WHERE status = 'pending' AND lease_owner IS NOT NULL AND lease_until > $1
                 GROUP BY lease_owner"
            ),
            |sql, ex| sqlx::query(sql)
                .bind(super::now_ms())
                .fetch_all(ex)
                .await?
                .into_iter()
                .map(|row| (row.get("lease_owner"), row.get("n")))
                .collect()
        );
        for (owner, count) in owners {
            let name = owner_instance(&owner);
            if let Some(instance) = instances.iter_mut().find(|i| Some(i.name.as_str()) == name) {
                instance.deliveries_in_flight += count;
            }
        }
        let leases: Vec<(String, String)> = on_pool!(
            self,
            (
                concat!(
                    "SELECT source, instance FROM source_leases WHERE expires_at > ",
                    sqlite_now!(),
                    " ORDER BY source"
                ),
                concat!(
                    "SELECT source, instance FROM source_leases WHERE expires_at > ",
                    pg_now!(),
                    " ORDER BY source"
                )
            ),
            |sql, ex| sqlx::query(sql)
                .fetch_all(ex)
                .await?
                .into_iter()
                .map(|row| (row.get("source"), row.get("instance")))
                .collect()
        );
        for (source, holder) in leases {
            if let Some(instance) = instances.iter_mut().find(|i| i.name == holder) {
                instance.sources.push(source);
            }
        }
        Ok(instances)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delivery_owner_names_its_instance_even_one_with_a_slash() {
        for instance in ["web-2", "eu/web-2"] {
            let owner = delivery_owner(instance);
            assert_eq!(owner_instance(&owner), Some(instance), "{owner}");
        }
        assert_ne!(
            delivery_owner("a"),
            delivery_owner("a"),
            "one per dispatcher"
        );
        assert_eq!(
            owner_instance("4242-0badcafe"),
            None,
            "an older version's owner"
        );
    }
}
