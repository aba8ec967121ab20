"""The shipped Grafana dashboard and Prometheus alerting rules (deploy/, issue 14 part 1), checked
against the real tools and the real gateway so neither can drift: `promtool check rules` and
`promtool test rules` on the rules, every dashboard query parsed by promtool's PromQL parser, and
every snigate_ metric name, label and label value they use compared with what a running gateway's
/metrics exports.

What it deliberately doesn't do: start a Prometheus or Grafana server (promtool is a CLI; nothing
is left running), or judge the thresholds (the unit tests pin what each alert fires on)."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import REPO, parse_prometheus

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
RULES = REPO / "deploy" / "prometheus" / "snigate-rules.yml"
RULES_TEST = REPO / "deploy" / "prometheus" / "snigate-rules.test.yml"
DASHBOARD = REPO / "deploy" / "grafana" / "snigate.json"
TOKEN = "e2e-monitoring-token-0123456789"

# Labels Prometheus itself adds to every scraped series, and the histogram bucket label.
SCRAPE_LABELS = {"instance", "job", "le"}
# Grafana's variables, replaced by something PromQL accepts so promtool can parse the queries.
GRAFANA_VARS = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h",
                "$instance": ".*"}

NAME_RE = re.compile(r"\bsnigate_[a-zA-Z0-9_]*")  # ours have no colons
SELECTOR_RE = re.compile(r"\b(snigate_[a-zA-Z0-9_]*)\s*\{([^}]*)\}")
MATCHER_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')
GROUPING_RE = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
LEGEND_RE = re.compile(r"\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}")


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=60, cwd=cwd)


def load_rules() -> list[dict]:
    doc = yaml.safe_load(RULES.read_text())
    return [r for g in doc["groups"] for r in g["rules"]]


def load_dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def dashboard_panels(dash: dict) -> list[dict]:
    out = []
    for p in dash["panels"]:
        out.append(p)
        out += p.get("panels", [])  # a collapsed row keeps its panels inside
    return out


def dashboard_queries(dash: dict) -> list[tuple[str, str, str]]:
    """(where, PromQL, legendFormat) for every panel target and every query variable."""
    out = []
    for p in dashboard_panels(dash):
        for t in p.get("targets", []):
            out.append((f"panel {p['id']} {p['title']!r} {t['refId']}", t["expr"],
                        t.get("legendFormat", "")))
    for v in dash["templating"]["list"]:
        if v["type"] == "query":
            q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            out.append((f"variable ${v['name']}", q, ""))
    return out


def grafana_to_promql(expr: str) -> str:
    for var, value in sorted(GRAFANA_VARS.items(), key=lambda kv: -len(kv[0])):
        expr = expr.replace(var, value)
    assert "$" not in expr, f"a Grafana variable this test doesn't know in {expr!r}"
    # label_values(METRIC, LABEL) is Grafana's, not PromQL: check its METRIC as a selector.
    m = re.fullmatch(r"\s*label_values\((.+),\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)\s*", expr)
    return m.group(1) if m else expr


def exported(samples: dict) -> dict[str, dict[str, set[str]]]:
    """{sample name: {label: {values}}} from a parse_prometheus() result."""
    out: dict[str, dict[str, set[str]]] = {}
    for name, labels in samples:
        per = out.setdefault(name, {})
        for k, v in labels:
            per.setdefault(k, set()).add(v)
    return out


def unknown_references(where: str, expr: str, legend: str, names: dict) -> list[str]:
    """What `expr` (and its legend) uses that the gateway doesn't export: snigate_ names, label
    names, and the values of = / != matchers and of =~ / !~ matchers that are plain alternatives
    (a|b). Labels Prometheus adds (instance, job) and the bucket label le are always allowed."""
    problems = []
    used = set(NAME_RE.findall(expr))
    for n in sorted(used - set(names)):
        problems.append(f"{where}: {n} is not exported by the gateway")
    known = [n for n in used if n in names]
    labels_of_expr = set().union(*(names[n].keys() for n in known)) if known else set()
    for metric, body in SELECTOR_RE.findall(expr):
        for label, op, value in MATCHER_RE.findall(body):
            if label in SCRAPE_LABELS or "$" in value or metric not in names:
                continue
            have = names[metric].get(label)
            if have is None:
                problems.append(f"{where}: {metric} has no label {label}")
                continue
            if op in ("=", "!="):
                wanted = [value]
            elif re.fullmatch(r"[a-zA-Z0-9_]+(\|[a-zA-Z0-9_]+)*", value):
                wanted = value.split("|")
            else:
                continue  # a real regex: nothing exact to compare
            for w in wanted:
                if w not in have:
                    problems.append(f"{where}: {metric}{{{label}=\"{w}\"}}: the gateway exports "
                                    f"{label} values {sorted(have)}")
    grouping = [g.strip() for gs in GROUPING_RE.findall(expr) for g in gs.split(",") if g.strip()]
    for label in grouping + LEGEND_RE.findall(legend):
        if label not in SCRAPE_LABELS and label not in labels_of_expr:
            problems.append(f"{where}: label {label} is on none of {sorted(known)}")
    return problems


@pytest.fixture
def scraped(gateway_factory) -> dict:
    """The names, labels and values a freshly started gateway's /metrics exports (every family is
    exported from the start, zero or not, so no traffic is needed)."""
    gw = gateway_factory(admin_listen="127.0.0.1:0", env={"SNIGATE_ADMIN_TOKEN": TOKEN})
    r = gw.admin("GET", "/metrics", token=TOKEN)
    assert r.status == 200, r
    return exported(parse_prometheus(r.body.decode()))


def test_rules_pass_promtool_check():
    # Proves: the alerting rules load in the real Prometheus (promtool's parser and checks), every
    # rule is an alert with a severity, a summary and a description.
    p = promtool("check", "rules", str(RULES))
    assert p.returncode == 0, p.stdout + p.stderr
    rules = load_rules()
    assert f"SUCCESS: {len(rules)} rules found" in p.stdout, p.stdout
    for r in rules:
        assert "alert" in r, f"not an alerting rule: {r}"
        assert r["labels"].get("severity") in ("critical", "warning", "info"), r["alert"]
        assert r["annotations"].get("summary") and r["annotations"].get("description"), r["alert"]


def test_rules_unit_tests_pass_and_cover_every_alert():
    # Proves: `promtool test rules` passes, and every alert has a case where it fires (so an alert
    # added without a test, or whose condition no longer fires, fails here).
    p = promtool("test", "rules", RULES_TEST.name, cwd=RULES_TEST.parent)
    assert p.returncode == 0 and "SUCCESS" in p.stdout, p.stdout + p.stderr
    tested = {c["alertname"] for t in yaml.safe_load(RULES_TEST.read_text())["tests"]
              for c in t.get("alert_rule_test", []) if c.get("exp_alerts")}
    alerts = {r["alert"] for r in load_rules()}
    assert alerts - tested == set(), f"alerts with no firing case in {RULES_TEST.name}"


def test_readme_scrape_config_loads_the_rules(tmp_path):
    # Proves: the prometheus.yml lines the README gives (scrape job, bearer token file,
    # rule_files) are a config the real Prometheus accepts, with the rules file loading from it.
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Dashboards and alerts"):]
    m = re.search(r"\n((?:    .*\n)*?    scrape_configs:\n(?:    .*\n)+)", section)
    assert m, "README's Dashboards and alerts section has no indented scrape_configs block"
    config = "\n".join(line[4:] for line in m.group(1).splitlines()) + "\n"
    token = "/etc/prometheus/snigate-token"
    assert token in config, config
    (tmp_path / "token").write_text("t\n")
    (tmp_path / "prometheus.yml").write_text(config.replace(token, str(tmp_path / "token")))
    shutil.copy(RULES, tmp_path / RULES.name)
    p = promtool("check", "config", "prometheus.yml", cwd=tmp_path)
    assert p.returncode == 0 and f"SUCCESS: {len(load_rules())} rules found" in p.stdout, \
        p.stdout + p.stderr


def test_dashboard_queries_are_valid_promql(tmp_path):
    # Proves: every dashboard query (panels and the instance variable, Grafana variables replaced)
    # is PromQL the real parser accepts: promtool checks them as recording rules. Also the
    # dashboard's own shape: unique panel ids, every panel on the ${datasource} variable.
    dash = load_dashboard()
    panels = dashboard_panels(dash)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), f"duplicate panel ids: {ids}"
    for p in panels:
        if p["type"] == "row":
            continue
        assert p.get("targets"), f"panel {p['title']!r} has no queries"
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
    queries = dashboard_queries(dash)
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query{i}", "expr": grafana_to_promql(q)}
        for i, (_, q, _) in enumerate(queries)]}]}
    f = tmp_path / "dashboard-queries.yml"
    f.write_text(yaml.safe_dump(rules))
    p = promtool("check", "rules", str(f))
    assert p.returncode == 0, p.stdout + p.stderr + "\n" + "\n".join(
        f"query{i}: {w}: {q}" for i, (w, q, _) in enumerate(queries))


def test_every_name_used_is_exported_by_the_gateway(scraped):
    # Proves: each snigate_ name, label and label value that the rules and the dashboard's queries
    # use is one a running gateway exports, and the dashboard shows every family it exports.
    problems = []
    for r in load_rules():
        problems += unknown_references(f"rule {r['alert']}", r["expr"], "", scraped)
    dash = load_dashboard()
    for where, q, legend in dashboard_queries(dash):
        problems += unknown_references(where, grafana_to_promql(q), legend, scraped)
    # Names mentioned anywhere in the dashboard (descriptions too) must be real.
    for n in sorted(set(NAME_RE.findall(DASHBOARD.read_text())) - set(scraped)):
        problems.append(f"{DASHBOARD.name} mentions {n}, which the gateway doesn't export")
    assert not problems, "\n".join(problems)

    used = " ".join(q for _, q, _ in dashboard_queries(dash))
    # A histogram counts as shown when any of its series is used.
    families = {re.sub(r"_(bucket|sum|count)$", "", n) for n in scraped}
    families = {f for f in families if f in scraped or f + "_bucket" in scraped}
    missing = sorted(f for f in families
                     if not re.search(re.escape(f) + r"(_bucket|_sum|_count)?\b", used))
    assert not missing, f"exported but on no dashboard panel: {missing}"


def test_the_name_check_catches_drift(scraped):
    # Proves: the check above can fail: a misspelt name, a label value the gateway never exports,
    # a label no metric has, and a legend naming a missing label are each reported.
    cases = {
        "sum(rate(snigate_conections_routed_total[5m]))": "not exported",
        'rate(snigate_connections_refused_total{reason="no_such_reason"}[5m])': "no_such_reason",
        'rate(snigate_connections_refused_total{reason=~"limit|nope"}[5m])': '"nope"',
        "sum by (endpoint) (snigate_sessions)": "label endpoint",
    }
    for expr, expect in cases.items():
        got = unknown_references("case", expr, "", scraped)
        assert any(expect in g for g in got), (expr, got)
    assert unknown_references("case", "snigate_sessions", "{{reason}}", scraped)
    assert unknown_references("case", 'rate(snigate_connections_refused_total{reason=~"limit|timeout"}[5m])',
                              "{{reason}}", scraped) == []
