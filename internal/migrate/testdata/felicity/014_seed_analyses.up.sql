INSERT INTO analysis (name, keyword, unit) VALUES ('Viral load', 'VL', 'copies/mL'), ('Haemoglobin', 'HB', 'g/dL'), ('Glucose', 'GLU', 'mmol/L');
