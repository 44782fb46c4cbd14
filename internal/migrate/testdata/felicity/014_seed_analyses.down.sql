DELETE FROM analysis WHERE keyword IN ('VL', 'HB', 'GLU');
