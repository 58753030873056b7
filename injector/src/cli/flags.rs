//! `injector fault add NAME --flags`: the validator's field names turned back into the flags the
//! user typed (`loss` -> `--loss`); the flags themselves are `FaultSpec`'s fields.

/// Rewrites a message about spec fields (`loss: ...`, `faults[0].loss: ...`) in flag names.
pub fn as_flags(msg: &str) -> String {
    let m = msg.strip_prefix("faults[0].").unwrap_or(msg);
    let Some((field, rest)) = m.split_once(": ") else {
        return m.to_string();
    };
    let flag = match field {
        "name" => "NAME".to_string(),
        "action" => {
            "--loss/--blackhole/--delay/--reject/--duplicate/--corrupt/--rate/--dns".to_string()
        }
        "for" => "--for".to_string(),
        f if f.chars().all(|c| c.is_ascii_lowercase() || c == '_') => {
            format!("--{}", f.replace('_', "-"))
        }
        _ => return m.to_string(),
    };
    format!("{flag}: {rest}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_become_flags() {
        assert_eq!(
            as_flags("loss: '150%': must be between 0% and 100%"),
            "--loss: '150%': must be between 0% and 100%"
        );
        assert_eq!(
            as_flags("faults[0].dport: '70000': ports are 0-65535"),
            "--dport: '70000': ports are 0-65535"
        );
        assert_eq!(
            as_flags("action: give one of"),
            "--loss/--blackhole/--delay/--reject/--duplicate/--corrupt/--rate/--dns: give one of"
        );
        assert_eq!(
            as_flags("faults[0].reject_with: 'x': use tcp-reset"),
            "--reject-with: 'x': use tcp-reset"
        );
        assert_eq!(
            as_flags("faults[0].name: a fault named 'x' exists"),
            "NAME: a fault named 'x' exists"
        );
        assert_eq!(as_flags("no such endpoint"), "no such endpoint");
    }
}
