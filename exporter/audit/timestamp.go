package audit

// parseTimestamp parses an RFC 3339 timestamp (YYYY-MM-DDTHH:MM:SS, optional
// fraction of up to any number of digits, then Z or ±hh:mm) into Unix
// nanoseconds. It returns 0 for anything else, including times outside the
// int64 nanosecond range (years 1678–2262).
//
// It exists because time.Parse, although it does not allocate on success,
// costs several times more than this on a path that runs once per event and
// needs none of its generality. Like time.Parse it rejects second 60 and
// impossible dates (Feb 30), and ignores fraction digits past nanoseconds.
func parseTimestamp(b []byte) int64 {
	minute, ok := minuteOf(b)
	if !ok {
		return 0
	}
	return fromMinute(b, minute)
}

// minuteOf validates and converts b's date, hour and minute (b[:16],
// YYYY-MM-DDTHH:MM) into the Unix seconds of that minute in the timestamp's
// own zone; b must be long enough to be a whole timestamp.
func minuteOf(b []byte) (int64, bool) {
	// Shortest form: 2006-01-02T15:04:05Z (20 bytes).
	if len(b) < 20 || b[4] != '-' || b[7] != '-' || (b[10] != 'T' && b[10] != 't') || b[13] != ':' {
		return 0, false
	}
	year, ok1 := digits(b[0:4])
	month, ok2 := digits(b[5:7])
	day, ok3 := digits(b[8:10])
	hour, ok4 := digits(b[11:13])
	minute, ok5 := digits(b[14:16])
	if !(ok1 && ok2 && ok3 && ok4 && ok5) ||
		month < 1 || month > 12 || day < 1 || day > daysIn(month, year) || hour > 23 || minute > 59 {
		return 0, false
	}
	return daysFromCivil(year, month, day)*86400 + int64(hour*3600+minute*60), true
}

// fromMinute parses the rest of b (:SS, an optional fraction, the zone)
// after a minute that minuteOf accepted.
func fromMinute(b []byte, minute int64) int64 {
	if len(b) < 20 || b[16] != ':' {
		return 0
	}
	sec, ok := digits(b[17:19])
	if !ok || sec > 59 {
		return 0
	}
	i := 19
	var nanos int64
	if b[i] == '.' || b[i] == ',' {
		i++
		start := i
		scale := int64(100_000_000)
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			nanos += int64(b[i]-'0') * scale
			scale /= 10
			i++
		}
		if i == start {
			return 0
		}
	}
	if i >= len(b) {
		return 0
	}
	var offset int64 // seconds east of UTC
	switch b[i] {
	case 'Z', 'z':
		i++
	case '+', '-':
		if len(b)-i != 6 || b[i+3] != ':' {
			return 0
		}
		oh, ok1 := digits(b[i+1 : i+3])
		om, ok2 := digits(b[i+4 : i+6])
		if !ok1 || !ok2 || oh > 23 || om > 59 {
			return 0
		}
		offset = int64(oh*3600 + om*60)
		if b[i] == '-' {
			offset = -offset
		}
		i += 6
	default:
		return 0
	}
	if i != len(b) {
		return 0
	}
	secs := minute + int64(sec) - offset
	// int64 nanoseconds cover -9223372036.854775808 s .. 9223372036.854775807 s.
	switch {
	case secs > 9223372036 || secs == 9223372036 && nanos > 854775807:
		return 0
	case secs < -9223372037 || secs == -9223372037 && nanos < 145224192:
		return 0
	}
	return secs*1_000_000_000 + nanos
}

// minuteCache remembers the last minute a Decoder parsed (b[:16] of a
// timestamp) and its Unix seconds: the events of a batch share it, so the
// date arithmetic runs once a minute rather than once an event.
type minuteCache struct {
	text [16]byte
	secs int64
	set  bool
}

// timestamp is parseTimestamp, with the minute remembered between calls.
func (d *Decoder) timestamp(b []byte) int64 {
	c := &d.minute
	if len(b) >= 20 && c.set && string(b[:16]) == string(c.text[:]) {
		return fromMinute(b, c.secs)
	}
	minute, ok := minuteOf(b)
	if !ok {
		return 0
	}
	copy(c.text[:], b[:16])
	c.secs, c.set = minute, true
	return fromMinute(b, minute)
}

// digits parses an all-digit field of a fixed width (2 or 4 digits).
func digits(b []byte) (int, bool) {
	n, ok := decimal(b, 4)
	return int(n), ok
}

func daysIn(month, year int) int {
	switch month {
	case 2:
		if year%4 == 0 && (year%100 != 0 || year%400 == 0) {
			return 29
		}
		return 28
	case 4, 6, 9, 11:
		return 30
	}
	return 31
}

// daysFromCivil returns the days since 1970-01-01 of a proleptic Gregorian
// date (Howard Hinnant's days_from_civil, restated for non-negative years).
func daysFromCivil(y, m, d int) int64 {
	if m <= 2 {
		y--
	}
	era := y
	if era < 0 {
		era -= 399
	}
	era /= 400
	yoe := y - era*400 // [0, 399]
	mp := (m + 9) % 12 // March = 0
	doy := (153*mp+2)/5 + d - 1
	doe := yoe*365 + yoe/4 - yoe/100 + doy
	return int64(era)*146097 + int64(doe) - 719468
}
