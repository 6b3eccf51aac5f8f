"""Infrastructure every part uses: params, files, errors, tracking, figures, the machine, the code graph."""
