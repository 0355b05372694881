#!/usr/bin/env python3
"""Writes the Grafana dashboard config/grafana/clairo-sync.json (schema 39, Grafana 11+).

The JSON is what ships; this script is how it is kept consistent (one selector, one rate
interval, every panel described). After editing:

    python3 scripts/grafana-dashboard.py > config/grafana/clairo-sync.json

tests/it/dashboard.rs checks the result: promtool parses every query, and a running
daemon serves every metric it reads.
"""
import json
DS={"type":"prometheus","uid":"${datasource}"}
SEL='job=~"$job",instance=~"$instance"'
panels=[]
pid=[0]
def row(title,y):
    pid[0]+=1
    panels.append({"id":pid[0],"type":"row","title":title,"collapsed":False,"gridPos":{"h":1,"w":24,"x":0,"y":y},"panels":[]})
def ts(title,desc,targets,x,y,w=8,h=8,unit="short",stack=False,min0=True):
    pid[0]+=1
    p={"id":pid[0],"type":"timeseries","title":title,"description":desc,"datasource":DS,
       "gridPos":{"h":h,"w":w,"x":x,"y":y},
       "fieldConfig":{"defaults":{"unit":unit,"custom":{"drawStyle":"line","lineWidth":1,"fillOpacity":10 if not stack else 30,
           "stacking":{"mode":"normal" if stack else "none","group":"A"},"showPoints":"never"},
           **({"min":0} if min0 else {})},"overrides":[]},
       "options":{"legend":{"displayMode":"list","placement":"bottom","showLegend":True},"tooltip":{"mode":"multi","sort":"desc"}},
       "targets":[{"refId":chr(65+i),"datasource":DS,"expr":e,"legendFormat":l,"range":True} for i,(e,l) in enumerate(targets)]}
    panels.append(p)
def stat(title,desc,expr,legend,x,y,w=6,h=4,unit="short",thresholds=None,text_mode="auto"):
    pid[0]+=1
    steps=thresholds or [{"color":"green","value":None}]
    panels.append({"id":pid[0],"type":"stat","title":title,"description":desc,"datasource":DS,
       "gridPos":{"h":h,"w":w,"x":x,"y":y},
       "fieldConfig":{"defaults":{"unit":unit,"thresholds":{"mode":"absolute","steps":steps}},"overrides":[]},
       "options":{"reduceOptions":{"calcs":["lastNotNull"],"fields":"","values":False},"textMode":text_mode,"colorMode":"background","graphMode":"none","justifyMode":"auto","orientation":"auto"},
       "targets":[{"refId":"A","datasource":DS,"expr":expr,"legendFormat":legend,"instant":True}]})
R='$__rate_interval'
y=0
row("Overview",y); y+=1
stat("Up","Whether Prometheus reaches the daemon's /metrics (1 = up).",f'up{{{SEL}}}',"{{instance}}",0,y,thresholds=[{"color":"red","value":None},{"color":"green","value":1}])
stat("Version","The running build (clairo_sync_build_info).",f'clairo_sync_build_info{{{SEL}}}',"{{version}}",6,y,text_mode="name")
stat("Dead deliveries (24 h)","Deliveries that gave up in the last day: `clairo-sync deliveries list --dead` lists them, `deliveries retry` replays them.",f'sum(increase(clairo_sync_deliveries_total{{{SEL},outcome="dead"}}[24h]))',"dead",12,y,thresholds=[{"color":"green","value":None},{"color":"red","value":1}])
stat("Queued deliveries","Deliveries waiting in the outbox, all connectors.",f'sum(clairo_sync_delivery_queue_depth{{{SEL}}})',"queued",18,y,thresholds=[{"color":"green","value":None},{"color":"orange","value":50}])
y+=4
row("Clairo API",y); y+=1
ts("Requests by status","Requests to the Clairo API per second, by HTTP status (or error kind).",[(f'sum by (status) (rate(clairo_sync_api_requests_total{{{SEL}}}[{R}]))',"{{status}}")],0,y,unit="reqps",stack=True)
ts("Rate-limit budget left","X-RateLimit-Remaining as Clairo last reported it; the budget is shared with the account's other integrations.",[(f'clairo_sync_api_rate_limit_remaining{{{SEL}}}',"{{instance}}")],8,y)
ts("429s received","Too Many Requests answers from Clairo; in steady state there are none. Lower clairo.max_requests_per_minute if they recur.",[(f'sum(increase(clairo_sync_api_throttled_total{{{SEL}}}[{R}]))',"429s")],16,y)
y+=8
row("Polling",y); y+=1
ts("Poll runs by source and outcome","Runs per second of each source (success, failure).",[(f'sum by (source, outcome) (rate(clairo_sync_poll_runs_total{{{SEL}}}[{R}]))',"{{source}} {{outcome}}")],0,y,unit="ops")
ts("Time since last successful run","Seconds since each source last completed a run; grows without bound when a source is stuck (ClairoSyncSourceStale).",[(f'time() - clairo_sync_last_success_timestamp_seconds{{{SEL}}}',"{{source}}")],8,y,unit="s")
ts("Items skipped","API items that failed to parse and were skipped (the journal has a warning for each).",[(f'sum by (source) (increase(clairo_sync_items_skipped_total{{{SEL}}}[{R}]))',"{{source}}")],16,y)
y+=8
ts("Sources behind schedule","1 while a source has not completed a run for three of its schedule periods (plus 90 s); /readyz is false meanwhile (ClairoSyncSourceBehindSchedule).",[(f'max by (source) (clairo_sync_source_stale{{{SEL}}})',"{{source}}")],0,y,w=24,h=6)
y+=6
row("Events and deliveries",y); y+=1
ts("Events by type","Events recorded per second: new briefs, conversation updates, processed meetings.",[(f'sum by (type) (rate(clairo_sync_events_total{{{SEL}}}[{R}]))',"{{type}}")],0,y,unit="ops",stack=True)
ts("Deliveries by connector and outcome","Delivery attempts per second (delivered, retry, dead).",[(f'sum by (connector, outcome) (rate(clairo_sync_deliveries_total{{{SEL}}}[{R}]))',"{{connector}} {{outcome}}")],8,y,unit="ops")
ts("Queue depth by connector","Deliveries waiting to be sent; a queue that only grows means a connector that is down or too slow.",[(f'sum by (connector) (clairo_sync_delivery_queue_depth{{{SEL}}})',"{{connector}}")],16,y)
y+=8
ts("Oldest pending delivery","How long the oldest delivery waiting for each connector has waited: steady near zero when it keeps up; a line that climbs is a connector down or retrying (`clairo-sync deliveries list` says why).",[(f'max by (connector) (clairo_sync_delivery_oldest_pending_seconds{{{SEL}}})',"{{connector}}")],0,y,w=24,h=6,unit="s")
y+=6
ts("Delivery latency (p50, p95, p99)","Time from an event's creation to its delivery, by connector (retries included).",[
    (f'histogram_quantile(0.5, sum by (le, connector) (rate(clairo_sync_delivery_latency_seconds_bucket{{{SEL}}}[{R}])))',"{{connector}} p50"),
    (f'histogram_quantile(0.95, sum by (le, connector) (rate(clairo_sync_delivery_latency_seconds_bucket{{{SEL}}}[{R}])))',"{{connector}} p95"),
    (f'histogram_quantile(0.99, sum by (le, connector) (rate(clairo_sync_delivery_latency_seconds_bucket{{{SEL}}}[{R}])))',"{{connector}} p99")],0,y,w=12,unit="s")
ts("Dead deliveries","Deliveries that gave up, per connector (kept and replayable: `clairo-sync deliveries retry --all-dead`).",[(f'sum by (connector) (increase(clairo_sync_deliveries_total{{{SEL},outcome="dead"}}[{R}]))',"{{connector}}")],12,y,w=12)
y+=8
row("Meetings",y); y+=1
ts("Recordings by outcome","Recordings taken from drop folders: uploaded, duplicate, rejected (moved to failed/), failed (retried).",[(f'sum by (outcome) (increase(clairo_sync_meeting_uploads_total{{{SEL}}}[{R}]))',"{{outcome}}")],0,y,w=24,stack=True)
dash={
 "__inputs":[],
 "annotations":{"list":[]},
 "description":"clairo-sync: Clairo API budget, polling, events, deliveries per connector and meeting uploads. Import it in Grafana (Dashboards → New → Import) and pick the Prometheus data source that scrapes the daemon.",
 "editable":True,"graphTooltip":1,"links":[],"liveNow":False,
 "panels":panels,
 "refresh":"1m","schemaVersion":39,"tags":["clairo-sync"],
 "templating":{"list":[
   {"name":"datasource","label":"Data source","type":"datasource","query":"prometheus","current":{},"hide":0,"refresh":1,"regex":"","includeAll":False,"multi":False,"options":[]},
   {"name":"job","label":"Job","type":"query","datasource":DS,"query":{"query":"label_values(clairo_sync_build_info, job)","refId":"job"},"definition":"label_values(clairo_sync_build_info, job)","refresh":2,"includeAll":True,"multi":True,"allValue":".*","current":{},"hide":0,"sort":1,"regex":"","options":[]},
   {"name":"instance","label":"Instance","type":"query","datasource":DS,"query":{"query":"label_values(clairo_sync_build_info{job=~\"$job\"}, instance)","refId":"instance"},"definition":"label_values(clairo_sync_build_info{job=~\"$job\"}, instance)","refresh":2,"includeAll":True,"multi":True,"allValue":".*","current":{},"hide":0,"sort":1,"regex":"","options":[]}
 ]},
 "time":{"from":"now-6h","to":"now"},"timepicker":{},"timezone":"","title":"clairo-sync","uid":"clairo-sync","version":1,"weekStart":""}
print(json.dumps(dash,indent=2,ensure_ascii=False))
