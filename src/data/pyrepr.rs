//! Numbers printed as Python prints them: the published datasets' text and the authors' rendering
//! come from Python's `repr` (`str(list)`), and the model trains on those exact tokens.

/// A JSON number as Python's `repr` prints the value `json.load` gives: integers as integers
/// (`1`), floats as the shortest text that reads back the same (`0.38`, `1.0`, `1e-05`).
pub fn python_repr(n: &serde_json::Number) -> String {
    match n.as_f64() {
        Some(f) if !n.is_i64() && !n.is_u64() => python_float_repr(f),
        _ => n.to_string(),
    }
}

/// Python's `repr(float)`: the shortest round-tripping digits, positional for exponents -4..16
/// (with a `.0` when whole), else scientific with a signed two-digit exponent.
pub fn python_float_repr(v: f64) -> String {
    if !v.is_finite() {
        return if v.is_nan() {
            "nan".into()
        } else if v > 0.0 {
            "inf".into()
        } else {
            "-inf".into()
        };
    }
    // Rust's `{:e}` gives the same shortest digits: `-3.8e-1`.
    let sci = format!("{v:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    if (-4..16).contains(&exp) {
        let point = exp + 1; // digits before the decimal point
        let text = if point <= 0 {
            format!("0.{}{digits}", "0".repeat((-point) as usize))
        } else if point as usize >= digits.len() {
            format!("{digits}{}.0", "0".repeat(point as usize - digits.len()))
        } else {
            let (int, frac) = digits.split_at(point as usize);
            format!("{int}.{frac}")
        };
        format!("{sign}{text}")
    } else {
        let mantissa = match digits.split_at(1) {
            (d, "") => d.to_string(),
            (d, rest) => format!("{d}.{rest}"),
        };
        let exp_sign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{mantissa}e{exp_sign}{:02}", exp.abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_print_as_python_repr() {
        for (v, python) in [
            (0.1, "0.1"),
            (-2.5, "-2.5"),
            (100.0, "100.0"),
            (1e-5, "1e-05"),
            (0.0001, "0.0001"),
            (1.5e16, "1.5e+16"),
            (1e16, "1e+16"),
            (123456789.125, "123456789.125"),
            (0.30000000000000004, "0.30000000000000004"),
        ] {
            assert_eq!(python_float_repr(v), python, "{v}");
        }
        // JSON integers stay integers, as `json.load` reads them.
        let nums: Vec<serde_json::Number> = serde_json::from_str("[1, 0.5, 1.0, 0]").unwrap();
        let text: Vec<String> = nums.iter().map(python_repr).collect();
        assert_eq!(text, ["1", "0.5", "1.0", "0"]);
    }
}
