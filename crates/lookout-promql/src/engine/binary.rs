//! Binary operators: arithmetic, comparisons (with and without `bool`), set operators, and
//! vector matching (`on`/`ignoring`, `group_left`/`group_right`) with Prometheus's errors.

use std::collections::HashSet;

use promql_parser::parser::{BinaryExpr, LabelModifier, VectorMatchCardinality};

use super::{
    Evaluator, FastMap, FnvBuild, QueryError, Sample, Value, Vector, drop_metric_name, label_hash,
};
use crate::labels::{Labels, METRIC_NAME};

/// Per-query memo of vector-matching work repeated at every step: join signatures and
/// result label sets, keyed by node and by the identity of the label sets involved (which
/// are kept alive in the entries).
#[derive(Default)]
pub(crate) struct BinaryMemo {
    signatures: FastMap<(usize, usize), (Labels, u64)>,
    results: FastMap<(usize, usize, usize), (Labels, Labels, HashedLabels)>,
}

/// A label set with its hash computed once (kept in [`BinaryMemo`]), so the per-step
/// check for duplicate results does not rehash every label.
#[derive(Clone, PartialEq, Eq)]
struct HashedLabels(u64, Labels);

impl std::hash::Hash for HashedLabels {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.0);
    }
}

/// Per match group, the result label sets produced so far.
type MatchedSets = FastMap<u64, HashSet<HashedLabels, FnvBuild>>;

/// The binary operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Pow,
    Atan2,
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
    And,
    Or,
    Unless,
}

impl BinOp {
    fn parse(s: &str) -> Option<BinOp> {
        Some(match s.to_ascii_lowercase().as_str() {
            "+" => BinOp::Add,
            "-" => BinOp::Sub,
            "*" => BinOp::Mul,
            "/" => BinOp::Div,
            "%" => BinOp::Mod,
            "^" => BinOp::Pow,
            "atan2" => BinOp::Atan2,
            "==" => BinOp::Eq,
            "!=" => BinOp::Ne,
            ">" => BinOp::Gt,
            "<" => BinOp::Lt,
            ">=" => BinOp::Ge,
            "<=" => BinOp::Le,
            "and" => BinOp::And,
            "or" => BinOp::Or,
            "unless" => BinOp::Unless,
            _ => return None,
        })
    }

    fn is_comparison(self) -> bool {
        matches!(
            self,
            BinOp::Eq | BinOp::Ne | BinOp::Gt | BinOp::Lt | BinOp::Ge | BinOp::Le
        )
    }

    fn is_set(self) -> bool {
        matches!(self, BinOp::And | BinOp::Or | BinOp::Unless)
    }

    /// Arithmetic changes what the metric means, so its name goes.
    fn changes_schema(self) -> bool {
        matches!(
            self,
            BinOp::Add
                | BinOp::Sub
                | BinOp::Mul
                | BinOp::Div
                | BinOp::Mod
                | BinOp::Pow
                | BinOp::Atan2
        )
    }
}

/// Go's `math.Mod` (result has the sign of the dividend), which Rust's `%` matches.
fn arith(op: BinOp, l: f64, r: f64) -> f64 {
    match op {
        BinOp::Add => l + r,
        BinOp::Sub => l - r,
        BinOp::Mul => l * r,
        BinOp::Div => l / r,
        BinOp::Mod => l % r,
        BinOp::Pow => go_pow(l, r),
        BinOp::Atan2 => l.atan2(r),
        _ => f64::NAN,
    }
}

/// Go's `math.Pow` special cases where Rust's `powf` differs.
fn go_pow(x: f64, y: f64) -> f64 {
    if y == 0.0 {
        return 1.0;
    }
    if x == 1.0 {
        return 1.0;
    }
    x.powf(y)
}

/// Applies `op` to two floats: the value and whether to keep it (comparisons filter).
fn elem(op: BinOp, l: f64, r: f64) -> (f64, bool) {
    match op {
        BinOp::Eq => (l, l == r),
        BinOp::Ne => (l, l != r),
        BinOp::Gt => (l, l > r),
        BinOp::Lt => (l, l < r),
        BinOp::Ge => (l, l >= r),
        BinOp::Le => (l, l <= r),
        _ => (arith(op, l, r), true),
    }
}

/// How two vectors are matched.
struct Matching<'e> {
    /// Memo of signatures and result label sets, per node of the query.
    memo: &'e std::cell::RefCell<BinaryMemo>,
    /// Identity of the binary expression node.
    node: usize,
    card: Card,
    on: bool,
    labels: Vec<String>,
    include: Vec<String>,
    /// `fill_left(v)`: value for a missing left-hand sample.
    fill_lhs: Option<f64>,
    /// `fill_right(v)`: value for a missing right-hand sample.
    fill_rhs: Option<f64>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Card {
    OneToOne,
    ManyToOne,
    OneToMany,
    ManyToMany,
}

impl Matching<'_> {
    fn from_expr<'e>(
        b: &BinaryExpr,
        op: BinOp,
        memo: &'e std::cell::RefCell<BinaryMemo>,
    ) -> Matching<'e> {
        let (mut card, on, labels, include) = match &b.modifier {
            None => (Card::OneToOne, false, vec![], vec![]),
            Some(m) => {
                let (card, include) = match &m.card {
                    VectorMatchCardinality::OneToOne => (Card::OneToOne, vec![]),
                    VectorMatchCardinality::ManyToOne(l) => (Card::ManyToOne, l.labels.clone()),
                    VectorMatchCardinality::OneToMany(l) => (Card::OneToMany, l.labels.clone()),
                    VectorMatchCardinality::ManyToMany => (Card::ManyToMany, vec![]),
                };
                let (on, labels) = match &m.matching {
                    Some(LabelModifier::Include(l)) => (true, l.labels.clone()),
                    Some(LabelModifier::Exclude(l)) => (false, l.labels.clone()),
                    None => (false, vec![]),
                };
                (card, on, labels, include)
            }
        };
        if op.is_set() {
            card = Card::ManyToMany;
        }
        let (fill_lhs, fill_rhs) = match &b.modifier {
            Some(m) => (m.fill_values.lhs, m.fill_values.rhs),
            None => (None, None),
        };
        Matching {
            memo,
            node: b as *const BinaryExpr as usize,
            card,
            on,
            labels,
            include,
            fill_lhs,
            fill_rhs,
        }
    }

    /// The join key of a series (a hash of the matching labels, as in Prometheus).
    fn signature(&self, l: &Labels) -> u64 {
        let mut memo = self.memo.borrow_mut();
        memo.signatures
            .entry((self.node, l.ptr_id()))
            .or_insert_with(|| (l.clone(), self.compute_signature(l)))
            .1
    }

    fn compute_signature(&self, l: &Labels) -> u64 {
        if self.on {
            label_hash(l, |k| self.labels.iter().any(|x| x == k))
        } else {
            label_hash(l, |k| {
                k != METRIC_NAME && !self.labels.iter().any(|x| x == k)
            })
        }
    }

    /// The labels a match group is shown with in errors.
    fn match_labels(&self, l: &Labels) -> Labels {
        let mut out = l.clone();
        if self.on {
            out.retain(|k, _| self.labels.iter().any(|x| x == k));
        } else {
            out.retain(|k, _| k != METRIC_NAME && !self.labels.iter().any(|x| x == k));
        }
        out
    }
}

impl Evaluator<'_> {
    pub(crate) fn eval_binary(&self, b: &BinaryExpr, ts: i64) -> Result<Value, QueryError> {
        let op_text = b.op.to_string();
        let op = BinOp::parse(&op_text)
            .ok_or_else(|| QueryError::eval(format!("unknown binary operator {op_text:?}")))?;
        let return_bool = b.modifier.as_ref().is_some_and(|m| m.return_bool);
        let lhs = self.eval(&b.lhs, ts)?;
        let rhs = self.eval(&b.rhs, ts)?;
        match (lhs, rhs) {
            (Value::Scalar { v: l, .. }, Value::Scalar { v: r, .. }) => {
                let v = if op.is_comparison() {
                    let (_, keep) = elem(op, l, r);
                    if keep { 1.0 } else { 0.0 }
                } else {
                    arith(op, l, r)
                };
                Ok(Value::Scalar { t: ts, v })
            }
            (Value::Vector(l), Value::Scalar { v: r, .. }) => {
                Ok(Value::Vector(vector_scalar(op, l, r, false, return_bool)))
            }
            (Value::Scalar { v: l, .. }, Value::Vector(r)) => {
                Ok(Value::Vector(vector_scalar(op, r, l, true, return_bool)))
            }
            (Value::Vector(l), Value::Vector(r)) => {
                let matching = Matching::from_expr(b, op, &self.binary_memo);
                let out = match op {
                    BinOp::And => vector_and(l, r, &matching),
                    BinOp::Or => vector_or(l, r, &matching),
                    BinOp::Unless => vector_unless(l, r, &matching),
                    _ => vector_binop(op, l, r, &matching, return_bool)?,
                };
                Ok(Value::Vector(out))
            }
            (l, r) => Err(QueryError::eval(format!(
                "binary expression must contain only scalar and instant vector types, got {} and {}",
                l.type_name(),
                r.type_name()
            ))),
        }
    }
}

fn vector_scalar(op: BinOp, vec: Vector, scalar: f64, swap: bool, return_bool: bool) -> Vector {
    let mut out = Vec::with_capacity(vec.len());
    for mut s in vec {
        let (l, r) = if swap { (scalar, s.f) } else { (s.f, scalar) };
        let (mut v, mut keep) = elem(op, l, r);
        if op.is_comparison() && swap {
            v = r;
        }
        if return_bool {
            v = if keep { 1.0 } else { 0.0 };
            keep = true;
        }
        if keep {
            s.f = v;
            if op.changes_schema() || return_bool {
                s.drop_name = true;
            }
            out.push(s);
        }
    }
    out
}

fn vector_and(l: Vector, r: Vector, m: &Matching) -> Vector {
    if l.is_empty() || r.is_empty() {
        return Vec::new();
    }
    let right: HashSet<u64, FnvBuild> = r.iter().map(|s| m.signature(&s.metric)).collect();
    l.into_iter()
        .filter(|s| right.contains(&m.signature(&s.metric)))
        .collect()
}

fn vector_or(l: Vector, r: Vector, m: &Matching) -> Vector {
    if l.is_empty() {
        return r;
    }
    if r.is_empty() {
        return l;
    }
    let left: HashSet<u64, FnvBuild> = l.iter().map(|s| m.signature(&s.metric)).collect();
    let mut out = l;
    out.extend(
        r.into_iter()
            .filter(|s| !left.contains(&m.signature(&s.metric))),
    );
    out
}

fn vector_unless(l: Vector, r: Vector, m: &Matching) -> Vector {
    if l.is_empty() || r.is_empty() {
        return l;
    }
    let right: HashSet<u64, FnvBuild> = r.iter().map(|s| m.signature(&s.metric)).collect();
    l.into_iter()
        .filter(|s| !right.contains(&m.signature(&s.metric)))
        .collect()
}

fn vector_binop(
    op: BinOp,
    lhs: Vector,
    rhs: Vector,
    m: &Matching,
    return_bool: bool,
) -> Result<Vector, QueryError> {
    if (lhs.is_empty() && rhs.is_empty())
        || ((lhs.is_empty() || rhs.is_empty()) && m.fill_lhs.is_none() && m.fill_rhs.is_none())
    {
        return Ok(Vec::new());
    }
    // One-to-many is many-to-one with the sides swapped; values are swapped back below.
    let swapped = m.card == Card::OneToMany;
    let (lhs, rhs) = if swapped { (rhs, lhs) } else { (lhs, rhs) };
    // As in Prometheus, the fill values apply to the sides after the swap.
    let (fill_for_missing_rhs, fill_for_missing_lhs) = (m.fill_rhs, m.fill_lhs);
    let mut right: FastMap<u64, &Sample> = FastMap::default();
    let mut right_order: Vec<u64> = Vec::with_capacity(rhs.len());
    for rs in &rhs {
        let sig = m.signature(&rs.metric);
        if let Some(dup) = right.get(&sig) {
            let side = if swapped { "left" } else { "right" };
            return Err(QueryError::eval(format!(
                "found duplicate series for the match group {} on the {side} hand-side of the operation: [{}, {}];many-to-many matching not allowed: matching labels must be unique on one side",
                m.match_labels(&rs.metric).to_braced_string(),
                dup.metric.to_braced_string(),
                rs.metric.to_braced_string(),
            )));
        }
        right.insert(sig, rs);
        right_order.push(sig);
    }
    let mut matched: MatchedSets = FastMap::default();
    let mut out = Vec::new();
    let ctx = OpCtx {
        op,
        m,
        return_bool,
        swapped,
    };
    for ls in &lhs {
        let sig = m.signature(&ls.metric);
        match right.get(&sig) {
            Some(rs) => ctx.apply(ls, rs, sig, &mut matched, &mut out)?,
            None => {
                if let Some(fill) = fill_for_missing_rhs {
                    let rs = Sample {
                        metric: m.match_labels(&ls.metric),
                        t: ls.t,
                        f: fill,
                        drop_name: false,
                    };
                    ctx.apply(ls, &rs, sig, &mut matched, &mut out)?;
                }
            }
        }
    }
    if let Some(fill) = fill_for_missing_lhs {
        for sig in right_order {
            if matched.contains_key(&sig) {
                continue;
            }
            let Some(rs) = right.get(&sig) else { continue };
            let ls = Sample {
                metric: m.match_labels(&rs.metric),
                t: rs.t,
                f: fill,
                drop_name: false,
            };
            ctx.apply(&ls, rs, sig, &mut matched, &mut out)?;
        }
    }
    Ok(out)
}

struct OpCtx<'m> {
    op: BinOp,
    m: &'m Matching<'m>,
    return_bool: bool,
    swapped: bool,
}

impl OpCtx<'_> {
    fn apply(
        &self,
        ls: &Sample,
        rs: &Sample,
        sig: u64,
        matched: &mut MatchedSets,
        out: &mut Vector,
    ) -> Result<(), QueryError> {
        let (op, m, return_bool, swapped) = (self.op, self.m, self.return_bool, self.swapped);
        let (fl, fr) = if swapped { (rs.f, ls.f) } else { (ls.f, rs.f) };
        let (mut v, keep) = elem(op, fl, fr);
        if return_bool {
            v = if keep { 1.0 } else { 0.0 };
        }
        let metric = {
            let mut memo = m.memo.borrow_mut();
            memo.results
                .entry((m.node, ls.metric.ptr_id(), rs.metric.ptr_id()))
                .or_insert_with(|| {
                    use std::hash::BuildHasher;
                    let metric = result_metric(&ls.metric, &rs.metric, op, m);
                    (
                        ls.metric.clone(),
                        rs.metric.clone(),
                        HashedLabels(FnvBuild.hash_one(&metric), metric),
                    )
                })
                .2
                .clone()
        };
        match matched.get_mut(&sig) {
            Some(inserted) => {
                if m.card == Card::OneToOne {
                    return Err(QueryError::eval(
                        "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)",
                    ));
                }
                if !inserted.insert(metric.clone()) {
                    return Err(QueryError::eval(
                        "multiple matches for labels: grouping labels must ensure unique matches",
                    ));
                }
            }
            None => {
                // One-to-one matching only asks whether the group matched before.
                let mut set = HashSet::with_hasher(FnvBuild);
                if m.card != Card::OneToOne {
                    set.insert(metric.clone());
                }
                matched.insert(sig, set);
            }
        }
        if keep || return_bool {
            out.push(Sample {
                metric: metric.1,
                t: ls.t,
                f: v,
                drop_name: return_bool || (!op.changes_schema() && ls.drop_name),
            });
        }
        Ok(())
    }
}

fn result_metric(lhs: &Labels, rhs: &Labels, op: BinOp, m: &Matching) -> Labels {
    let mut l = lhs.clone();
    if op.changes_schema() {
        drop_metric_name(&mut l);
    }
    if m.card == Card::OneToOne {
        if m.on {
            l.retain(|k, _| m.labels.iter().any(|x| x == k));
        } else {
            l.retain(|k, _| !m.labels.iter().any(|x| x == k));
        }
    }
    for name in &m.include {
        match rhs.get(name) {
            Some(v) => {
                let v = v.to_string();
                l.set(name, &v);
            }
            None => l.remove(name),
        }
    }
    l
}
