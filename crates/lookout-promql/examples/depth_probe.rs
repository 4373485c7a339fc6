//! Measures whether an expression shape at a given depth runs (parse, Display, instant and
//! range evaluation, drop) on a thread with a given stack: `depth_probe SHAPE DEPTH STACK_KIB [LIMIT]`.
//! A stack overflow aborts the process, so find the deepest depth that runs by bisecting
//! over runs of this program (exit status 0: it ran).
use lookout_promql::Labels;
use lookout_promql::engine::{self, Engine, EngineOptions};
use lookout_promql::storage::{Storage, StorageOptions};

fn shape(name: &str, n: usize) -> Option<String> {
    let n = n.max(2);
    Some(match name {
        "chain" => vec!["1"; n].join("+"),
        "or" => vec!["up"; n].join(" or "),
        "right" => format!("{}1{}", "1+(".repeat(n - 1), ")".repeat(n - 1)),
        "sum" => format!("{}up{}", "sum(".repeat(n - 1), ")".repeat(n - 1)),
        "abs" => format!("{}up{}", "abs(".repeat(n - 1), ")".repeat(n - 1)),
        "neg" => format!("{}up", "-".repeat(n - 1)),
        "paren" => format!("{}up{}", "(".repeat(n - 1), ")".repeat(n - 1)),
        "subq" => format!(
            "{}up{}",
            "max_over_time((".repeat(n / 3),
            ")[2m:1m])".repeat(n / 3)
        ),
        "labelrep" => format!(
            "{}up{}",
            "label_replace(".repeat(n - 1),
            ",\"a\",\"b\",\"c\",\"d\")".repeat(n - 1)
        ),
        "mix" => format!(
            "{}up{}",
            "sum by (a) (1 + -(".repeat(n / 4),
            "))".repeat(n / 4)
        ),
        _ => return None,
    })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let num = |i: usize, default: usize| {
        args.get(i)
            .and_then(|a| a.parse::<usize>().ok())
            .unwrap_or(default)
    };
    let Some(q) = shape(args.get(1).map(String::as_str).unwrap_or(""), num(2, 10)) else {
        eprintln!("usage: depth_probe SHAPE DEPTH STACK_KIB [LIMIT]");
        std::process::exit(2);
    };
    let stack = num(3, 2048) * 1024;
    let limit = num(4, 1_000_000);
    let run = std::thread::Builder::new()
        .stack_size(stack)
        .spawn(move || {
            let st = Storage::new(StorageOptions::default());
            for i in 0..3 {
                let l = Labels::new([("__name__", "up"), ("a", i.to_string().as_str())]);
                for t in 0..20 {
                    let _ = st.append(&l, t * 60_000, 1.0);
                }
            }
            let engine = Engine::new(EngineOptions {
                max_depth: limit,
                timeout: Some(std::time::Duration::from_secs(2)),
                ..EngineOptions::default()
            });
            let expr = match engine::parse_with_depth(&q, limit) {
                Ok(e) => e,
                Err(e) => {
                    println!("refused: {}", e.message());
                    return;
                }
            };
            let _ = expr.to_string();
            let _ = expr.prettify();
            let _ = engine.instant_query(&st, &q, 600_000);
            let _ = engine.range_query(&st, &q, 0, 600_000, 60_000);
            drop(expr);
        });
    if run.map(|h| h.join().is_err()).unwrap_or(true) {
        std::process::exit(1);
    }
}
