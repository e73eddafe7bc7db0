//! The posting streak: consecutive calendar days with a post, in the configured time zone.

use std::collections::HashSet;

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::Timestamp;

/// Consecutive calendar days (in `tz`) with at least one post, ending today or yesterday
/// (a streak is not broken before the day is over); 0 otherwise. Times are epoch seconds;
/// posts dated after today are ignored.
pub fn streak(create_times: &[i64], now: i64, tz: &TimeZone) -> i64 {
    let day = |t: i64| Timestamp::from_second(t).ok().map(|ts| tz.to_datetime(ts).date());
    let Some(today) = day(now) else {
        return 0;
    };
    let days: HashSet<Date> = create_times
        .iter()
        .filter_map(|t| day(*t))
        .filter(|d| *d <= today)
        .collect();
    let mut cur = if days.contains(&today) {
        today
    } else {
        match today.yesterday() {
            Ok(y) if days.contains(&y) => y,
            _ => return 0,
        }
    };
    let mut n = 0;
    while days.contains(&cur) {
        n += 1;
        match cur.yesterday() {
            Ok(y) => cur = y,
            Err(_) => break,
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> i64 {
        s.parse::<jiff::Zoned>().expect("zoned").timestamp().as_second()
    }

    fn tz(name: &str) -> TimeZone {
        TimeZone::get(name).expect("tz")
    }

    #[test]
    fn streak_counts_consecutive_days_ending_today_or_yesterday() {
        let utc = TimeZone::UTC;
        let now = at("2024-05-10T15:00:00[UTC]");
        let days = |list: &[&str]| -> Vec<i64> { list.iter().map(|d| at(&format!("{d}T12:00:00[UTC]"))).collect() };
        assert_eq!(streak(&[], now, &utc), 0);
        assert_eq!(streak(&days(&["2024-05-10", "2024-05-09", "2024-05-08"]), now, &utc), 3);
        // Not posted yet today: the streak still stands on yesterday.
        assert_eq!(streak(&days(&["2024-05-09", "2024-05-08"]), now, &utc), 2);
        // Last post two days ago: broken.
        assert_eq!(streak(&days(&["2024-05-08", "2024-05-07"]), now, &utc), 0);
        // A gap ends the count; older posts do not matter.
        assert_eq!(
            streak(
                &days(&["2024-05-10", "2024-05-09", "2024-05-07", "2024-05-06", "2024-05-05"]),
                now,
                &utc
            ),
            2
        );
        // Duplicates and order do not matter.
        let mut many = days(&["2024-05-08", "2024-05-10", "2024-05-09", "2024-05-10"]);
        many.push(at("2024-05-10T00:00:00[UTC]"));
        assert_eq!(streak(&many, now, &utc), 3);
        // Future-dated posts are ignored rather than counted as today.
        assert_eq!(streak(&days(&["2024-05-11", "2024-05-12"]), now, &utc), 0);
    }

    #[test]
    fn streak_midnight_edges() {
        let utc = TimeZone::UTC;
        let posts = [at("2024-05-09T23:59:59[UTC]"), at("2024-05-10T00:00:00[UTC]")];
        assert_eq!(streak(&posts, at("2024-05-10T00:00:00[UTC]"), &utc), 2);
        assert_eq!(streak(&posts, at("2024-05-11T23:59:59[UTC]"), &utc), 2);
        // One second later the 10th is the day before yesterday.
        assert_eq!(streak(&posts, at("2024-05-12T00:00:00[UTC]"), &utc), 0);
    }

    #[test]
    fn streak_days_follow_the_time_zone() {
        let mx = tz("America/Mexico_City");
        // 03:00 UTC is still the previous evening in Mexico City (UTC-6).
        let posts = [at("2024-05-10T03:00:00[UTC]"), at("2024-05-10T20:00:00[UTC]")];
        let now = at("2024-05-10T21:00:00[UTC]");
        assert_eq!(streak(&posts, now, &TimeZone::UTC), 1);
        assert_eq!(streak(&posts, now, &mx), 2);
    }

    #[test]
    fn streak_across_dst_changes() {
        let ny = tz("America/New_York");
        // Spring forward: 2024-03-10 has 23 hours.
        let posts: Vec<i64> = [
            "2024-03-09T23:30",
            "2024-03-10T00:30",
            "2024-03-10T23:30",
            "2024-03-11T00:15",
        ]
        .iter()
        .map(|t| at(&format!("{t}:00[America/New_York]")))
        .collect();
        assert_eq!(streak(&posts, at("2024-03-11T09:00:00[America/New_York]"), &ny), 3);
        // Fall back: 2024-11-03 has 25 hours; 00:30 and 23:30 are the same day.
        let posts: Vec<i64> = ["2024-11-02T12:00", "2024-11-03T00:30", "2024-11-03T23:30"]
            .iter()
            .map(|t| at(&format!("{t}:00[America/New_York]")))
            .collect();
        assert_eq!(streak(&posts, at("2024-11-04T08:00:00[America/New_York]"), &ny), 2);
        // A 24-hour step from 23:30 on the 2nd lands on 22:30 on the 3rd: still the next day.
        let first = at("2024-11-02T23:30:00[America/New_York]");
        assert_eq!(streak(&[first, first + 86_400], first + 86_400, &ny), 2);
    }
}
