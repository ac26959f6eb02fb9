package hub

import (
	"regexp"
	"strings"
)

// Patterns of .gitignore and .gitattributes files, for preupload's
// shouldIgnore and LFS decisions (§4.3). The rules are git's (gitignore(5),
// gitattributes(5)): "*" and "?" do not cross "/", "**" does, a pattern
// with a "/" before its end is anchored at the root and one without matches
// a name at any depth, a trailing "/" matches directories only, "!" negates
// (.gitignore only), "\" escapes, "#" starts a comment.

// maxPatternLines bounds the lines read from one pattern file.
const maxPatternLines = 10_000

type gitPattern struct {
	re      *regexp.Regexp
	negate  bool
	dirOnly bool
	attrs   []string // .gitattributes: the attributes after the pattern
}

// parseGitPatterns parses pattern lines; attrs says the file is a
// .gitattributes (attributes after the pattern, no negation). Lines that
// cannot be compiled are skipped, as git skips what it cannot use.
func parseGitPatterns(text string, attrs bool) []gitPattern {
	var out []gitPattern
	for i, line := range strings.Split(text, "\n") {
		if i >= maxPatternLines {
			break
		}
		line = strings.TrimRight(line, "\r")
		if attrs {
			line = strings.TrimSpace(line)
		} else if !strings.HasSuffix(line, `\ `) {
			line = strings.TrimRight(line, " ")
		}
		if line == "" || line[0] == '#' {
			continue
		}
		var p gitPattern
		pat := line
		if attrs {
			fields := strings.Fields(line)
			pat, p.attrs = fields[0], fields[1:]
		} else if pat[0] == '!' {
			p.negate, pat = true, pat[1:]
		} else if strings.HasPrefix(pat, `\!`) || strings.HasPrefix(pat, `\#`) {
			pat = pat[1:]
		}
		if strings.HasSuffix(pat, "/") {
			p.dirOnly, pat = true, strings.TrimRight(pat, "/")
		}
		if pat == "" {
			continue
		}
		anchored := strings.Contains(pat, "/")
		pat = strings.TrimPrefix(pat, "/")
		expr, ok := globRegexp(pat)
		if !ok {
			continue
		}
		if anchored {
			expr = "^" + expr + "$"
		} else {
			expr = "^(?:.*/)?" + expr + "$"
		}
		re, err := regexp.Compile(expr)
		if err != nil {
			continue
		}
		p.re = re
		out = append(out, p)
	}
	return out
}

// globRegexp translates one gitignore glob (without anchoring) to a regular
// expression.
func globRegexp(pat string) (string, bool) {
	var b strings.Builder
	for i := 0; i < len(pat); i++ {
		c := pat[i]
		switch c {
		case '*':
			if i+1 < len(pat) && pat[i+1] == '*' {
				atStart := i == 0 || pat[i-1] == '/'
				j := i + 2
				switch {
				case atStart && j == len(pat):
					b.WriteString(".*") // "**" or "dir/**": everything
				case atStart && pat[j] == '/':
					b.WriteString("(?:.*/)?") // "**/": zero or more directories
					j++
				default:
					b.WriteString("[^/]*") // "**" inside a name is "*"
				}
				i = j - 1
				continue
			}
			b.WriteString("[^/]*")
		case '?':
			b.WriteString("[^/]")
		case '[':
			end := strings.IndexByte(pat[i+1:], ']')
			if end < 0 {
				return "", false
			}
			class := pat[i+1 : i+1+end]
			if class == "" {
				return "", false
			}
			b.WriteByte('[')
			if class[0] == '!' || class[0] == '^' {
				b.WriteByte('^')
				class = class[1:]
			}
			b.WriteString(strings.NewReplacer(`\`, `\\`, `[`, `\[`).Replace(class))
			b.WriteByte(']')
			i += end + 1
		case '\\':
			if i+1 < len(pat) {
				i++
				b.WriteString(regexp.QuoteMeta(pat[i : i+1]))
			}
		default:
			// Byte by byte: QuoteMeta escapes only ASCII, so the bytes of
			// a multi-byte character pass through unchanged.
			b.WriteString(regexp.QuoteMeta(pat[i : i+1]))
		}
	}
	return b.String(), true
}

// gitIgnored reports whether path (a file) is ignored by patterns: a
// directory above it is excluded (files in an excluded directory cannot be
// re-included), or the last pattern matching the file excludes it.
func gitIgnored(patterns []gitPattern, path string) bool {
	if len(patterns) == 0 {
		return false
	}
	for i := 0; i < len(path); i++ {
		if path[i] == '/' && lastMatch(patterns, path[:i], true) {
			return true
		}
	}
	return lastMatch(patterns, path, false)
}

func lastMatch(patterns []gitPattern, path string, isDir bool) bool {
	ignored := false
	for _, p := range patterns {
		if p.dirOnly && !isDir {
			continue
		}
		if p.re.MatchString(path) {
			ignored = !p.negate
		}
	}
	return ignored
}

// lfsTracked reports whether .gitattributes patterns give path
// "filter=lfs": the last matching line that sets or unsets the filter
// attribute decides (patterns match files only in attributes files).
func lfsTracked(patterns []gitPattern, path string) bool {
	lfs := false
	for _, p := range patterns {
		if p.dirOnly || !p.re.MatchString(path) {
			continue
		}
		for _, a := range p.attrs {
			switch {
			case a == "filter=lfs":
				lfs = true
			case a == "-filter" || a == "!filter" || strings.HasPrefix(a, "filter="):
				lfs = false
			}
		}
	}
	return lfs
}

// defaultGitAttributes is the .gitattributes of a new repo: the Hub's
// default LFS patterns (weights, archives, arrays), so that preupload
// sends such files through LFS whatever their size.
const defaultGitAttributes = `*.7z filter=lfs diff=lfs merge=lfs -text
*.arrow filter=lfs diff=lfs merge=lfs -text
*.bin filter=lfs diff=lfs merge=lfs -text
*.bz2 filter=lfs diff=lfs merge=lfs -text
*.ckpt filter=lfs diff=lfs merge=lfs -text
*.ftz filter=lfs diff=lfs merge=lfs -text
*.gguf filter=lfs diff=lfs merge=lfs -text
*.gz filter=lfs diff=lfs merge=lfs -text
*.h5 filter=lfs diff=lfs merge=lfs -text
*.joblib filter=lfs diff=lfs merge=lfs -text
*.lfs.* filter=lfs diff=lfs merge=lfs -text
*.mlmodel filter=lfs diff=lfs merge=lfs -text
*.model filter=lfs diff=lfs merge=lfs -text
*.msgpack filter=lfs diff=lfs merge=lfs -text
*.npy filter=lfs diff=lfs merge=lfs -text
*.npz filter=lfs diff=lfs merge=lfs -text
*.onnx filter=lfs diff=lfs merge=lfs -text
*.ot filter=lfs diff=lfs merge=lfs -text
*.parquet filter=lfs diff=lfs merge=lfs -text
*.pb filter=lfs diff=lfs merge=lfs -text
*.pickle filter=lfs diff=lfs merge=lfs -text
*.pkl filter=lfs diff=lfs merge=lfs -text
*.pt filter=lfs diff=lfs merge=lfs -text
*.pth filter=lfs diff=lfs merge=lfs -text
*.rar filter=lfs diff=lfs merge=lfs -text
*.safetensors filter=lfs diff=lfs merge=lfs -text
saved_model/**/* filter=lfs diff=lfs merge=lfs -text
*.tar.* filter=lfs diff=lfs merge=lfs -text
*.tar filter=lfs diff=lfs merge=lfs -text
*.tflite filter=lfs diff=lfs merge=lfs -text
*.tgz filter=lfs diff=lfs merge=lfs -text
*.wasm filter=lfs diff=lfs merge=lfs -text
*.xz filter=lfs diff=lfs merge=lfs -text
*.zip filter=lfs diff=lfs merge=lfs -text
*.zst filter=lfs diff=lfs merge=lfs -text
*tfevents* filter=lfs diff=lfs merge=lfs -text
`
