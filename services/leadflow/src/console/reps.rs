//! `leadflow reps list`: every rep with its capacity and open assignments, and every team
//! with its members, strategy and the leads waiting in its queue.

use leadflow_proto::routing::v1 as routing;

use super::{CallResult, Clients, ConsoleError, print, print_json, table::Table, to_json};
use crate::cli::{ConsoleArgs, OutputFormat};

/// Every rep, page by page.
pub async fn all_reps(clients: &Clients) -> Result<Vec<routing::Rep>, ConsoleError> {
    let mut reps = Vec::new();
    let mut token = String::new();
    loop {
        let page = clients
            .routing()
            .list_reps(routing::ListRepsRequest {
                team_id: String::new(),
                page_size: 200,
                page_token: token,
            })
            .await
            .or_fail("ListReps")?;
        reps.extend(page.reps);
        if page.next_page_token.is_empty() {
            return Ok(reps);
        }
        token = page.next_page_token;
    }
}

async fn all_teams(clients: &Clients) -> Result<Vec<routing::Team>, ConsoleError> {
    let mut teams = Vec::new();
    let mut token = String::new();
    loop {
        let page = clients
            .routing()
            .list_teams(routing::ListTeamsRequest {
                page_size: 200,
                page_token: token,
            })
            .await
            .or_fail("ListTeams")?;
        teams.extend(page.teams);
        if page.next_page_token.is_empty() {
            return Ok(teams);
        }
        token = page.next_page_token;
    }
}

/// Lists the reps and the teams with their queues.
pub async fn list(args: &ConsoleArgs) -> Result<(), ConsoleError> {
    let clients = Clients::for_console(args).await?;
    let reps = all_reps(&clients).await?;
    let teams = all_teams(&clients).await?;
    let loads = clients
        .routing()
        .get_routing_metrics(routing::GetRoutingMetricsRequest {
            time_range: Some(super::report::window(None, None)),
            ..Default::default()
        })
        .await
        .or_fail("GetRoutingMetrics")?
        .rep_loads;
    let mut queues = Vec::with_capacity(teams.len());
    for team in &teams {
        let queue = clients
            .routing()
            .get_team_queue(routing::GetTeamQueueRequest {
                team_id: team.team_id.clone(),
                page_size: 20,
                page_token: String::new(),
            })
            .await
            .or_fail("GetTeamQueue")?;
        queues.push(queue);
    }
    if args.format == OutputFormat::Json {
        return print_json(&serde_json::json!({
            "reps": reps.iter().map(to_json).collect::<Vec<_>>(),
            "repLoads": loads.iter().map(to_json).collect::<Vec<_>>(),
            "teams": teams.iter().zip(&queues).map(|(team, queue)| serde_json::json!({
                "team": to_json(team),
                "queue": to_json(queue),
            })).collect::<Vec<_>>(),
        }));
    }
    let mut table = Table::new(&[
        "REP",
        "EMAIL",
        "TIME ZONE",
        "LANGUAGES",
        "ACTIVE",
        ">OPEN",
        ">CAPACITY",
        ">ACCEPTED",
    ]);
    for rep in &reps {
        let load = loads.iter().find(|load| load.rep_id == rep.rep_id);
        table.row([
            rep.display_name.clone(),
            rep.email.clone(),
            rep.time_zone.clone(),
            rep.languages.join(","),
            if rep.active { "yes" } else { "no" }.to_owned(),
            load.map_or(0, |load| load.open_assignments).to_string(),
            rep.capacity.to_string(),
            load.map_or(0, |load| load.accepted_count).to_string(),
        ]);
    }
    let mut text = format!("Reps\n{}", table.render());
    let name_of = |rep_id: &str| {
        reps.iter()
            .find(|rep| rep.rep_id == rep_id)
            .map_or_else(|| rep_id.to_owned(), |rep| rep.display_name.clone())
    };
    for (team, queue) in teams.iter().zip(&queues) {
        let strategy = routing::RoutingStrategy::try_from(team.strategy)
            .map_or("-", |strategy| strategy.as_str_name())
            .trim_start_matches("ROUTING_STRATEGY_")
            .to_lowercase();
        let members: Vec<String> = team.member_rep_ids.iter().map(|id| name_of(id)).collect();
        text.push_str(&format!(
            "\nTeam {} ({}): {}; {} leads queued\n",
            team.name,
            strategy.replace('_', " "),
            members.join(", "),
            queue.total_count
        ));
        let mut waiting = Table::new(&[">#", "LEAD", "PRODUCT", "SINCE"]);
        for lead in &queue.leads {
            waiting.row([
                lead.position.to_string(),
                lead.lead_id.clone(),
                lead.product.clone(),
                lead.enqueue_time
                    .as_ref()
                    .and_then(leadflow_platform::time::from_timestamp)
                    .map_or_else(
                        || "-".to_owned(),
                        |time| time.format("%Y-%m-%d %H:%M").to_string(),
                    ),
            ]);
        }
        if !waiting.is_empty() {
            text.push_str(&waiting.render());
        }
    }
    print(&text)
}
