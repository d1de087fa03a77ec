/* qa-run recording player: asciicast v2, ANSI colours (16, 256, truecolor), cursor movement,
 * carriage returns, play/pause/seek/speed. No dependencies, no network: recordings arrive as
 * scripts that register themselves in window.QA_CASTS, so the page works from file:// too.
 * Recorded text only ever reaches the page through textContent, never as markup. */
(function () {
  'use strict';

  var PALETTE = ['#000000', '#cd3131', '#0dbc79', '#e5e510', '#2472c8', '#bc3fbc', '#11a8cd', '#e5e5e5',
    '#666666', '#f14c4c', '#23d18b', '#f5f543', '#3b8eea', '#d670d6', '#29b8db', '#ffffff'];
  var CUBE = [0, 95, 135, 175, 215, 255];

  function rgb(r, g, b) { return 'rgb(' + r + ',' + g + ',' + b + ')'; }
  function color256(n) {
    if (n < 16) return PALETTE[n];
    if (n < 232) { n -= 16; return rgb(CUBE[Math.floor(n / 36)], CUBE[Math.floor(n / 6) % 6], CUBE[n % 6]); }
    var l = 8 + (n - 232) * 10;
    return rgb(l, l, l);
  }

  var PLAIN = { fg: null, bg: null, bold: false, dim: false, italic: false, underline: false, inverse: false };
  function copyStyle(s) {
    return { fg: s.fg, bg: s.bg, bold: s.bold, dim: s.dim, italic: s.italic, underline: s.underline, inverse: s.inverse };
  }

  /* A terminal screen with unlimited scrollback. lines[top .. top+rows-1] is the screen. */
  function Term(cols, rows) {
    this.cols = Math.max(1, cols | 0 || 80);
    this.rows = Math.max(1, rows | 0 || 24);
    this.reset();
  }
  Term.prototype.reset = function () {
    this.lines = [];
    this.top = 0;
    this.x = 0;
    this.y = 0;
    this.saved = [0, 0];
    this.style = PLAIN;
    this.state = 0; /* 0 ground, 1 ESC, 2 CSI, 3 OSC/string, 4 charset designation */
    this.params = '';
    this.strEsc = false;
  };
  Term.prototype.line = function (y) {
    var i = this.top + y;
    while (this.lines.length <= i) this.lines.push({ cells: [], wrapped: false });
    return this.lines[i];
  };
  Term.prototype.lineFeed = function () {
    if (this.y < this.rows - 1) this.y++;
    else this.top++;
    this.line(this.y);
  };
  Term.prototype.put = function (ch) {
    if (this.x >= this.cols) {
      this.x = 0;
      this.lineFeed();
      this.line(this.y).wrapped = true;
    }
    var cells = this.line(this.y).cells;
    while (cells.length < this.x) cells.push([' ', PLAIN]);
    cells[this.x] = [ch, this.style];
    this.x++;
  };
  Term.prototype.eraseLine = function (y, from, to) {
    var cells = this.line(y).cells;
    for (var i = from; i < Math.min(to, cells.length); i++) cells[i] = [' ', PLAIN];
    if (to >= cells.length && from < cells.length) cells.length = Math.max(from, 0);
  };
  Term.prototype.write = function (data) {
    for (var i = 0; i < data.length; i++) {
      var ch = data[i];
      var code = data.charCodeAt(i);
      if (this.state === 0) {
        if (code === 27) { this.state = 1; }
        else if (ch === '\n') { this.x = 0; this.lineFeed(); }
        else if (ch === '\r') { this.x = 0; }
        else if (ch === '\b') { this.x = Math.max(0, Math.min(this.x, this.cols) - 1); }
        else if (ch === '\t') { this.x = Math.min(this.cols - 1, (Math.floor(this.x / 8) + 1) * 8); }
        else if (code < 32 || code === 127) { /* other controls: bell, shift in/out */ }
        else this.put(ch);
      } else if (this.state === 1) {
        if (ch === '[') { this.state = 2; this.params = ''; }
        else if (ch === ']' || ch === 'P' || ch === '_' || ch === '^') { this.state = 3; this.strEsc = false; }
        else if (ch === '(' || ch === ')' || ch === '#' || ch === '%') { this.state = 4; }
        else {
          if (ch === '7') this.saved = [this.x, this.y];
          else if (ch === '8') { this.x = this.saved[0]; this.y = this.saved[1]; }
          else if (ch === 'c') this.reset();
          else if (ch === 'M') { if (this.y > 0) this.y--; }
          else if (ch === 'D') this.lineFeed();
          else if (ch === 'E') { this.x = 0; this.lineFeed(); }
          this.state = 0;
        }
      } else if (this.state === 2) {
        if (code >= 0x40 && code <= 0x7e) { this.csi(ch, this.params); this.state = 0; }
        else if (code === 27) { this.state = 1; }
        else if (this.params.length < 64) this.params += ch;
      } else if (this.state === 3) {
        if (code === 7 || (this.strEsc && ch === '\\')) this.state = 0;
        this.strEsc = code === 27;
      } else {
        this.state = 0;
      }
    }
  };
  Term.prototype.csi = function (final, raw) {
    var priv = /^[?>=<!]/.test(raw);
    var parts = raw.replace(/^[?>=<!]/, '').replace(/[ -\/]+$/, '').split(/[;:]/);
    var p = parts.map(function (s) { var n = parseInt(s, 10); return isNaN(n) ? 0 : n; });
    var n = Math.max(1, p[0] || 0);
    if (priv && final !== 'm') return;
    switch (final) {
      case 'm': this.sgr(parts.length === 1 && parts[0] === '' ? [0] : p); break;
      case 'A': this.y = Math.max(0, this.y - n); break;
      case 'B': case 'e': this.y = Math.min(this.rows - 1, this.y + n); break;
      case 'C': case 'a': this.x = Math.min(this.cols - 1, this.x + n); break;
      case 'D': this.x = Math.max(0, Math.min(this.x, this.cols) - n); break;
      case 'E': this.x = 0; this.y = Math.min(this.rows - 1, this.y + n); break;
      case 'F': this.x = 0; this.y = Math.max(0, this.y - n); break;
      case 'G': case '`': this.x = Math.min(this.cols - 1, n - 1); break;
      case 'd': this.y = Math.min(this.rows - 1, n - 1); break;
      case 'H': case 'f':
        this.y = Math.min(this.rows - 1, Math.max(1, p[0] || 0) - 1);
        this.x = Math.min(this.cols - 1, Math.max(1, p[1] || 0) - 1);
        break;
      case 'J': {
        var mode = p[0] || 0, y;
        if (mode === 0) { this.eraseLine(this.y, this.x, Infinity); for (y = this.y + 1; y < this.rows; y++) this.eraseLine(y, 0, Infinity); }
        else if (mode === 1) { for (y = 0; y < this.y; y++) this.eraseLine(y, 0, Infinity); this.eraseLine(this.y, 0, this.x + 1); }
        else { for (y = 0; y < this.rows; y++) { this.eraseLine(y, 0, Infinity); this.line(y).wrapped = false; } }
        break;
      }
      case 'K': {
        var m = p[0] || 0;
        if (m === 0) this.eraseLine(this.y, this.x, Infinity);
        else if (m === 1) this.eraseLine(this.y, 0, this.x + 1);
        else this.eraseLine(this.y, 0, Infinity);
        break;
      }
      case 'X': this.eraseLine(this.y, this.x, this.x + n); break;
      case 'P': this.line(this.y).cells.splice(this.x, n); break;
      case 's': this.saved = [this.x, this.y]; break;
      case 'u': this.x = this.saved[0]; this.y = this.saved[1]; break;
      default: break;
    }
  };
  Term.prototype.sgr = function (p) {
    var s = copyStyle(this.style);
    for (var i = 0; i < p.length; i++) {
      var c = p[i];
      if (c === 0) s = copyStyle(PLAIN);
      else if (c === 1) s.bold = true;
      else if (c === 2) s.dim = true;
      else if (c === 3) s.italic = true;
      else if (c === 4) s.underline = true;
      else if (c === 7) s.inverse = true;
      else if (c === 22) { s.bold = false; s.dim = false; }
      else if (c === 23) s.italic = false;
      else if (c === 24) s.underline = false;
      else if (c === 27) s.inverse = false;
      else if (c >= 30 && c <= 37) s.fg = PALETTE[c - 30];
      else if (c >= 40 && c <= 47) s.bg = PALETTE[c - 40];
      else if (c >= 90 && c <= 97) s.fg = PALETTE[c - 90 + 8];
      else if (c >= 100 && c <= 107) s.bg = PALETTE[c - 100 + 8];
      else if (c === 39) s.fg = null;
      else if (c === 49) s.bg = null;
      else if (c === 38 || c === 48) {
        var col = null;
        if (p[i + 1] === 5) { col = color256((p[i + 2] || 0) & 255); i += 2; }
        else if (p[i + 1] === 2) { col = rgb(p[i + 2] & 255, p[i + 3] & 255, p[i + 4] & 255); i += 4; }
        if (c === 38) s.fg = col; else s.bg = col;
      }
    }
    this.style = s;
  };
  /* The text a reader sees: every line ever shown, wrapped lines joined, trailing blanks cut. */
  Term.prototype.text = function () {
    var out = [];
    for (var i = 0; i < this.lines.length; i++) {
      var l = this.lines[i];
      var t = l.cells.map(function (c) { return c[0]; }).join('');
      if (l.wrapped && out.length) out[out.length - 1] += t;
      else out.push(t);
    }
    out = out.map(function (t) { return t.replace(/\s+$/, ''); });
    while (out.length && out[out.length - 1] === '') out.pop();
    return out.join('\n');
  };
  Term.prototype.render = function (pre, maxLines) {
    var frag = document.createDocumentFragment();
    var start = Math.max(0, this.lines.length - (maxLines || 2000));
    for (var i = start; i < this.lines.length; i++) {
      var cells = this.lines[i].cells, j = 0;
      while (j < cells.length) {
        var st = cells[j][1], k = j, text = '';
        while (k < cells.length && cells[k][1] === st) { text += cells[k][0]; k++; }
        if (st === PLAIN) frag.appendChild(document.createTextNode(text));
        else {
          var span = document.createElement('span');
          var fg = st.fg, bg = st.bg;
          if (st.inverse) { fg = st.bg || '#111111'; bg = st.fg || '#e5e5e5'; }
          if (fg) span.style.color = fg;
          if (bg) span.style.backgroundColor = bg;
          if (st.bold) span.style.fontWeight = 'bold';
          if (st.dim) span.style.opacity = '0.7';
          if (st.italic) span.style.fontStyle = 'italic';
          if (st.underline) span.style.textDecoration = 'underline';
          span.textContent = text;
          frag.appendChild(span);
        }
        j = k;
      }
      if (i < this.lines.length - 1) frag.appendChild(document.createTextNode('\n'));
    }
    while (pre.firstChild) pre.removeChild(pre.firstChild);
    pre.appendChild(frag);
  };

  /* Playback of one recording into the page's player elements. */
  function Player(root) {
    this.root = root;
    this.screen = root.querySelector('.term');
    this.textOut = root.querySelector('.term-text');
    this.button = root.querySelector('.pp');
    this.seek = root.querySelector('.seek');
    this.clock = root.querySelector('.clock');
    this.speedSel = root.querySelector('.speed');
    this.title = root.querySelector('.player-title');
    this.timer = null;
    this.events = [];
    this.term = new Term(80, 24);
    this.t = 0;
    this.pos = 0;
    this.playing = false;
    var self = this;
    this.button.addEventListener('click', function () { self.playing ? self.pause() : self.play(); });
    this.seek.addEventListener('input', function () { self.seekTo(parseFloat(self.seek.value) || 0); });
    this.speedSel.addEventListener('change', function () { self.speed = parseFloat(self.speedSel.value) || 1; });
    this.speed = parseFloat(this.speedSel.value) || 1;
  }
  Player.prototype.load = function (key, cast, label) {
    this.pause();
    var h = cast.header || {};
    var limit = h.idle_time_limit > 0 ? h.idle_time_limit : 2;
    var t = 0, last = 0;
    this.events = [];
    for (var i = 0; i < cast.events.length; i++) {
      var ev = cast.events[i];
      if (!ev || ev[1] !== 'o' || typeof ev[2] !== 'string') continue;
      var raw = +ev[0] || 0;
      t += Math.min(Math.max(raw - last, 0), limit);
      last = raw;
      this.events.push([t, ev[2]]);
    }
    this.duration = t;
    this.key = key;
    this.term = new Term(h.width, h.height);
    this.seek.max = String(Math.max(t, 0.01));
    this.title.textContent = label || '';
    this.root.hidden = false;
    this.root.setAttribute('data-key', key);
    this.seekTo(0);
  };
  Player.prototype.setState = function (s) {
    this.root.setAttribute('data-state', s);
    this.button.textContent = this.playing ? 'Pause' : (s === 'ended' ? 'Replay' : 'Play');
  };
  Player.prototype.show = function () {
    this.term.render(this.screen);
    this.seek.value = String(this.t);
    this.clock.textContent = this.t.toFixed(1) + ' / ' + this.duration.toFixed(1) + ' s';
  };
  Player.prototype.seekTo = function (target) {
    this.term.reset();
    this.pos = 0;
    this.t = Math.max(0, Math.min(target, this.duration));
    this.advance();
    this.show();
    if (this.pos >= this.events.length) this.finish();
    else this.setState(this.playing ? 'playing' : 'paused');
  };
  Player.prototype.advance = function () {
    while (this.pos < this.events.length && this.events[this.pos][0] <= this.t) {
      this.term.write(this.events[this.pos][1]);
      this.pos++;
    }
  };
  Player.prototype.finish = function () {
    this.playing = false;
    clearTimeout(this.timer);
    this.textOut.textContent = this.term.text();
    this.setState('ended');
  };
  Player.prototype.play = function () {
    if (this.pos >= this.events.length) this.seekTo(0);
    this.playing = true;
    this.setState('playing');
    this.tick(0);
  };
  Player.prototype.pause = function () {
    this.playing = false;
    clearTimeout(this.timer);
    if (this.events.length) this.setState(this.pos >= this.events.length ? 'ended' : 'paused');
  };
  /* Advances by the delay that was asked for rather than by wall time, so playback is the same
   * under a busy machine and under a browser's virtual time. */
  Player.prototype.tick = function (stepSeconds) {
    if (!this.playing) return;
    this.t = Math.min(this.duration, this.t + stepSeconds);
    this.advance();
    this.show();
    if (this.pos >= this.events.length) { this.finish(); return; }
    var wait = Math.min(Math.max((this.events[this.pos][0] - this.t) / this.speed, 0.01), 0.1);
    var self = this;
    this.timer = setTimeout(function () { self.tick(wait * self.speed); }, wait * 1000);
  };

  function start() {
    var root = document.getElementById('player');
    if (!root) return;
    var player = new Player(root);
    window.QA_CASTS = window.QA_CASTS || {};
    function open(button, autoplay) {
      var key = button.getAttribute('data-key');
      var label = button.getAttribute('data-label');
      var begin = function () {
        var cast = window.QA_CASTS[key];
        if (!cast) { root.setAttribute('data-state', 'missing'); return; }
        player.load(key, cast, label);
        if (autoplay) player.play();
      };
      if (window.QA_CASTS[key]) { begin(); return; }
      var s = document.createElement('script');
      s.src = button.getAttribute('data-cast');
      s.onload = begin;
      s.onerror = function () { root.hidden = false; root.setAttribute('data-state', 'missing'); player.title.textContent = 'Recording could not be loaded.'; };
      document.head.appendChild(s);
    }
    var buttons = document.querySelectorAll('button.play');
    for (var i = 0; i < buttons.length; i++) {
      buttons[i].addEventListener('click', function (e) {
        open(e.currentTarget, true);
        root.scrollIntoView && root.scrollIntoView();
      });
    }
    /* #play=KEY[&speed=N] opens a recording and plays it, for links and for tests. */
    var hash = {};
    location.hash.replace(/^#/, '').split('&').forEach(function (kv) {
      var i = kv.indexOf('=');
      if (i > 0) hash[decodeURIComponent(kv.slice(0, i))] = decodeURIComponent(kv.slice(i + 1));
    });
    if (hash.speed) { player.speed = parseFloat(hash.speed) || 1; player.speedSel.value = hash.speed; }
    if (hash.play) {
      for (var j = 0; j < buttons.length; j++) {
        if (buttons[j].getAttribute('data-key') === hash.play) { open(buttons[j], true); break; }
      }
    } else if (buttons.length) {
      /* Without a choice in the address, the first step that did not pass (or else the first
       * step) is loaded, paused, so the page opens on the recording a reader most likely wants. */
      var first = buttons[0];
      for (var k = 0; k < buttons.length; k++) {
        if (buttons[k].getAttribute('data-verdict') !== 'PASS') { first = buttons[k]; break; }
      }
      open(first, false);
    }
  }

  window.QaTerm = Term;
  window.QaPlayer = Player;
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
