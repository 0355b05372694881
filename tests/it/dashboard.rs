//! The Grafana dashboard shipped in config/grafana/: valid JSON for current Grafana, no
//! hard-coded data source, every query valid PromQL (promtool), and every metric it reads
//! served by a running daemon.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::support::{LoggedDaemon, Receiver, daemon_config, enable_http, sandbox, write};

fn dashboard() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/grafana/clairo-sync.json");
    let text = std::fs::read_to_string(&path).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// Every panel, rows' nested panels included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut all = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        all.push(panel);
        if let Some(nested) = panel["panels"].as_array() {
            all.extend(nested);
        }
    }
    all
}

/// Every query of every panel, as Grafana would send it once its variables are filled in.
fn queries(dashboard: &Value) -> Vec<String> {
    panels(dashboard)
        .into_iter()
        .flat_map(|panel| panel["targets"].as_array().cloned().unwrap_or_default())
        .map(|target| {
            target["expr"]
                .as_str()
                .expect("every target has a PromQL expr")
                .replace("$__rate_interval", "5m")
                .replace("$job", ".*")
                .replace("$instance", ".*")
        })
        .collect()
}

fn metric_names(queries: &[String]) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for query in queries {
        let mut rest = query.as_str();
        while let Some(start) = rest.find("clairo_sync_") {
            let name: String = rest[start..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[start + name.len()..];
            names.insert(name);
        }
    }
    names
}

#[test]
fn the_dashboard_is_grafana_json_with_a_data_source_variable_and_no_fixed_uids() {
    let dashboard = dashboard();
    assert!(dashboard["schemaVersion"].as_u64().unwrap() >= 39);
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    assert!(
        variables
            .iter()
            .any(|v| v["name"] == "datasource" && v["type"] == "datasource"),
        "a `datasource` variable"
    );
    let all = panels(&dashboard);
    assert!(all.len() >= 15, "{} panels", all.len());
    for panel in all.iter().filter(|p| p["type"] != "row") {
        assert_eq!(
            panel["datasource"]["uid"], "${datasource}",
            "panel {:?} uses the variable, not a fixed data source",
            panel["title"]
        );
        assert!(
            panel["description"].as_str().is_some_and(|d| !d.is_empty()),
            "panel {:?} says what it shows",
            panel["title"]
        );
        for target in panel["targets"].as_array().unwrap() {
            assert_eq!(target["datasource"]["uid"], "${datasource}");
        }
    }
}

#[test]
fn every_dashboard_query_passes_promtool_as_a_recording_rule() {
    let queries = queries(&dashboard());
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (index, query) in queries.iter().enumerate() {
        rules.push_str(&format!(
            "      - record: dashboard:query_{index}\n        expr: {}\n",
            serde_json::to_string(query).unwrap()
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "dashboard.rules.yml", &rules);
    let output = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .expect("promtool (scripts/test-prereqs.sh installs Debian's `prometheus` as root)");
    assert!(
        output.status.success(),
        "promtool check rules:\n{}{}\n{rules}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_metric_the_dashboard_reads_is_served_by_a_running_daemon() {
    let names = metric_names(&queries(&dashboard()));
    assert!(names.len() >= 10, "{names:?}");
    let sandbox = sandbox(2, 1).await;
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = daemon_config(dir.path(), &sandbox, &receiver, "");
    enable_http(&config);
    let daemon = LoggedDaemon::start(&config, &[]);
    let address = daemon.http_address().await;
    receiver
        .wait_for_delivered(2, Duration::from_secs(30))
        .await;
    let exposition = crate::support::get(format!("http://{address}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in names {
        // A histogram is queried through its `_bucket` series; its TYPE line names the base.
        let family = name.strip_suffix("_bucket").unwrap_or(&name);
        assert!(
            exposition.contains(&format!("# TYPE {family} ")),
            "the dashboard reads {name}, which /metrics does not serve:\n{exposition}"
        );
    }
}
